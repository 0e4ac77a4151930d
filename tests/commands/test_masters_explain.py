"""``masters --for --explain`` names each candidate's fate; ``max_age_days`` bounds the choice."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.layouts import binned_layout, date_cards, single_layout, write_layout_frame
from biaswatch.testing.service import catalog_rows

FOR = "2025-03-11T03:00:00"  # night 2025-03-10 in Chicago


def write_night(directory: Path, xbin: int, day: dt.date, seed: int) -> list[Path]:
    """Three cryo biases binned ``xbin`` x 1, taken at 03:00 UTC on ``day`` (the night before)."""
    directory.mkdir(parents=True)
    shape = {"rows": 40, "data_cols": 48, "overscan_cols": 8}
    layout = single_layout(**shape) if xbin == 1 else binned_layout(**shape, ccdsum=f"{xbin} 1")
    first = dt.datetime.combine(day, dt.time(3, 0), tzinfo=dt.UTC)
    return [
        write_layout_frame(
            directory / f"b{i}.fits",
            layout,
            seed=seed + i,
            header=date_cards(first + dt.timedelta(seconds=i)),
        )
        for i in range(3)
    ]


def masters_of(config: Path) -> dict[tuple[str, str], str]:
    """Each master's path by (night, geometry label)."""
    rows = catalog_rows(config, "SELECT night, geometry, path FROM masters")
    return {(str(r["night"]), str(r["geometry"])): str(r["path"]) for r in rows}


def backfilled(tmp_path: Path) -> tuple[Path, Path, dict[tuple[str, str], str]]:
    """Unbinned masters of nights 01-19, 03-05, 03-08, 03-10 and a 2x1 one of 03-10.

    The unbinned master of 03-10 is then rejected by a person. Returns the config, an
    unbinned frame (for --like) and the masters.
    """
    config = write_config(tmp_path, expected_frames=3, min_frames=3)
    archive = tmp_path / "archive"
    like = write_night(archive / "u0310", 1, dt.date(2025, 3, 11), 10)[0]
    write_night(archive / "b0310", 2, dt.date(2025, 3, 11), 20)
    write_night(archive / "u0308", 1, dt.date(2025, 3, 9), 30)
    write_night(archive / "u0305", 1, dt.date(2025, 3, 6), 40)
    write_night(archive / "u0119", 1, dt.date(2025, 1, 20), 50)
    run_cli("backfill", "--config", config, "--camera", "cryo", archive, check=True)
    masters = masters_of(config)
    assert len(masters) == 5
    states = {str(r["state"]) for r in catalog_rows(config, "SELECT state FROM masters")}
    assert states == {"accepted"}
    rejected = masters[("2025-03-10", "56x40-1x1")]
    run_cli("reject", "--config", config, rejected, "--why", "light leak", check=True)
    # The rejected master now lives in its own folder, under its own name.
    moved = masters_of(config)
    assert moved[("2025-03-10", "56x40-1x1")] != rejected
    assert {k: v for k, v in moved.items() if v != moved[("2025-03-10", "56x40-1x1")]} == {
        k: v for k, v in masters.items() if v != rejected
    }
    return config, like, moved


def test_explain_names_each_candidates_reason(tmp_path: Path) -> None:
    """The chosen master, a rejected verdict, another configuration, too old and farther."""
    config, like, masters = backfilled(tmp_path)
    asked = ("masters", "--config", config, "--camera", "cryo", "--for", FOR, "--like", like)
    shown = run_cli(*asked, "--explain", check=True)
    lines = shown.stdout.splitlines()
    assert lines[-1] == masters[("2025-03-08", "56x40-1x1")]

    def line_of(night: str, label: str) -> str:
        # lines[0] heads the list; the last line is the chosen path alone
        (found,) = [line for line in lines[1:-1] if masters[(night, label)] in line]
        return found

    assert "chosen" in line_of("2025-03-08", "56x40-1x1")
    assert "rejected" in line_of("2025-03-10", "56x40-1x1")
    assert "verdict: rejected" in line_of("2025-03-10", "56x40-1x1")
    assert "configuration 56x40-2x1, the frame's is 56x40-1x1" in line_of("2025-03-10", "56x40-2x1")
    assert "too_old" in line_of("2025-01-19", "56x40-1x1")
    assert "(max_age_days = 30)" in line_of("2025-01-19", "56x40-1x1")
    assert "farther" in line_of("2025-03-05", "56x40-1x1")

    as_json = json.loads(run_cli(*asked, "--explain", "--json", check=True).stdout)
    assert as_json["chosen"] == masters[("2025-03-08", "56x40-1x1")]
    outcomes = {c["path"]: c["outcome"] for c in as_json["candidates"]}
    assert outcomes == {
        masters[("2025-03-08", "56x40-1x1")]: "chosen",
        masters[("2025-03-10", "56x40-1x1")]: "rejected",
        masters[("2025-03-10", "56x40-2x1")]: "other_configuration",
        masters[("2025-01-19", "56x40-1x1")]: "too_old",
        masters[("2025-03-05", "56x40-1x1")]: "farther",
    }


def test_for_never_returns_a_master_older_than_max_age_days_and_says_so(tmp_path: Path) -> None:
    """Six weeks after the last usable master: no master, the nearest one and its age named."""
    config, like, masters = backfilled(tmp_path)
    late = "2025-04-20T03:00:00"
    found = run_cli(
        *("masters", "--config", config, "--camera", "cryo", "--for", late, "--like", like)
    )
    assert found.returncode == 1
    # Night 2025-03-08 began at its noon rollover, 12:00 CST = 18:00 UTC (DST began on
    # 03-09), 42 days and 9 hours before 2025-04-20T03:00Z: 42.4 days.
    newest = masters[("2025-03-08", "56x40-1x1")]
    assert found.stdout.startswith(f"no master: the nearest accepted one, {newest}, is 42.4 ")
    assert f"days older than {late} (max_age_days = 30)" in found.stdout


def test_max_age_days_is_a_camera_setting(tmp_path: Path) -> None:
    """With max_age_days = 60 the same six-weeks-later frame gets that master."""
    config, like, masters = backfilled(tmp_path)
    text = config.read_text().replace("[defaults]\n", "[defaults]\nmax_age_days = 60\n", 1)
    config.write_text(text)
    found = run_cli(
        *("masters", "--config", config, "--camera", "cryo", "--for", "2025-04-20T03:00:00"),
        *("--like", like),
        check=True,
    )
    assert found.stdout.strip() == masters[("2025-03-08", "56x40-1x1")]


def test_explain_needs_for(tmp_path: Path) -> None:
    """--explain without --for is refused with the reason."""
    config = write_config(tmp_path)
    refused = run_cli("masters", "--config", config, "--explain")
    assert refused.returncode != 0 and "--explain needs --for" in refused.stderr
