"""Every command that answers has --json: one operator's night, read back as JSON at each step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biaswatch.cli.main import COMMANDS, build_parser
from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, write_config

# The service itself (its log lines are JSON already) and a shell script have no --json.
NO_JSON = {"run", "completion"}


def json_of(*args: str | Path) -> Any:
    """Run a command with --json; its stdout must be JSON and its status 0."""
    result = run_cli(*args, "--json", check=True)
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_every_command_but_the_service_and_completion_takes_json() -> None:
    """Each command's parser accepts --json, except run and completion, which say why above."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    with_json = {n for n, p in commands.items() if "--json" in p._option_string_actions}
    assert with_json == set(COMMANDS) - NO_JSON


def test_a_night_from_frames_to_verdict_reads_back_as_json(tmp_path: Path) -> None:
    """check-config, backfill, masters, reject, accept, report, log and attempts print JSON."""
    config = write_config(tmp_path, expected_frames=3, min_frames=3)
    settings = json_of("check-config", "--config", config)
    assert settings["valid"] and [c["name"] for c in settings["cameras"]] == ["cryo", "te"]
    assert {"service", "site", "alerts", "notify"} <= set(settings)
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(3):  # a past night: closed at once, combined by backfill
        write_cryo_raw(archive / f"b{i}.fits", 30 + i, date_obs=f"2025-03-10T03:00:0{i}")
    counts = json_of("backfill", "--config", config, "--camera", "cryo", archive)
    assert counts == {"camera": "cryo", "new_files": 3, "sets_combined": 1, "masters": 1}
    (master,) = json_of("masters", "--config", config)
    rejected = json_of("reject", "--config", config, master["path"], "--why", "a test")
    assert rejected["state"] == "rejected" and rejected["latest"] is None
    assert Path(rejected["master"]).name.startswith("rejected_")
    accepted = json_of("accept", "--config", config, rejected["master"], "--why", "fine")
    assert accepted["state"] == "accepted" and accepted["latest"] == master["path"]
    page = json_of("report", "--config", config, "--night", "2025-03-09", "-o", tmp_path / "r.html")
    assert Path(page["report"]).is_file() and page["night"] == "2025-03-09"
    events = [
        json.loads(line)
        for line in run_cli(
            "log", "--config", config, "--camera", "cryo", "--json", check=True
        ).stdout.splitlines()
    ]
    assert "master.published" in {e["event"] for e in events}
    assert all(e.get("camera", "cryo") == "cryo" for e in events)
    (attempt,) = json_of("attempts", "--config", config)
    assert attempt["outcome"] == "done"


def test_combine_and_simulate_answer_in_json(tmp_path: Path) -> None:
    """combine --json names the master and its frame count; simulate --json lists its frames."""
    config = write_config(tmp_path)
    written = json_of(
        "simulate", "--config", config, "--camera", "te", "--frames", "3", "--interval", "0"
    )
    assert written["camera"] == "te" and len(written["frames"]) == 3
    assert all(Path(p).is_file() for p in written["frames"])
    out = tmp_path / "m.fits"
    made = json_of("combine", "--config", config, "--camera", "te", "-o", out, *written["frames"])
    assert made["master"] == str(out) and made["frames"] == 3 and out.is_file()
