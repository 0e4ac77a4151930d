"""Bad arguments end in one line naming the problem and a documented exit status, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biaswatch.testing.helpers import run_cli, write_config

# (arguments after the command's --config, exit status, words the last stderr line holds)
CASES = {
    "masters --night yesterday": (
        ["masters", "--night", "yesterday"],
        2,
        "'yesterday' is not a date",
    ),
    "masters --for tomorrow": (
        ["masters", "--for", "tomorrow", "--camera", "cryo"],
        2,
        "'tomorrow' is not a time",
    ),
    "masters --camera nosuch": (["masters", "--camera", "nosuch"], 78, "no camera 'nosuch'"),
    "attempts --night bad": (["attempts", "--night", "bad"], 2, "'bad' is not a date"),
    "attempts --set x": (["attempts", "--set", "x"], 2, "invalid int value: 'x'"),
    "log --night bad": (["log", "--night", "bad"], 2, "argument --night"),
    "log --camera nosuch": (["log", "--camera", "nosuch"], 78, "no camera 'nosuch'"),
    "report --night bad": (["report", "--night", "bad", "-o", "r.html"], 2, "argument --night"),
    "backfill missing dir": (
        ["backfill", "--camera", "cryo", "no/such/dir"],
        2,
        "not a directory: no/such/dir",
    ),
    "backfill --camera nosuch": (["backfill", "--camera", "nosuch", "."], 78, "no camera 'nosuch'"),
    "simulate --camera nosuch": (["simulate", "--camera", "nosuch"], 78, "no camera 'nosuch'"),
    "combine missing file": (
        ["combine", "-o", "m.fits", "no/such.fits"],
        1,
        "no such file: no/such.fits",
    ),
    "report without --night": (["report", "-o", "r.html"], 2, "--night"),
    "accept unknown master": (
        ["accept", "no/such.fits", "--why", "x"],
        1,
        "no catalog yet",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_argument_is_one_line_and_a_documented_status(tmp_path: Path, name: str) -> None:
    """Each bad argument exits with its documented status and names the problem, no traceback."""
    args, status, words = CASES[name]
    config = write_config(tmp_path)
    command, rest = args[0], args[1:]
    result = run_cli(command, "--config", config, *rest)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert words in result.stderr.strip().splitlines()[-1]


def test_combine_of_a_missing_file_names_it_in_one_line(tmp_path: Path) -> None:
    """``biaswatch combine missing.fits`` fails with status 1 and the file's name, no traceback."""
    missing = tmp_path / "missing.fits"
    result = run_cli("combine", "-o", tmp_path / "m.fits", missing)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"biaswatch combine: no such file: {missing}"]
    assert not (tmp_path / "m.fits").exists()


def test_attempts_json_without_a_catalog_is_still_json(tmp_path: Path) -> None:
    """``attempts --json`` before any catalog prints an empty JSON array; the words go to stderr."""
    result = run_cli("attempts", "--config", write_config(tmp_path), "--json", check=True)
    assert result.stdout == "[]\n"
    assert "no catalog yet" in result.stderr


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """A reader gone before the output (``| head``) gets no BrokenPipeError traceback (141)."""
    import subprocess
    import sys

    # 300 cameras: an output (about 700 KB) well beyond the pipe's 64 KiB buffer (pipe(7)),
    # so the command is still writing when the reader leaves.
    extra = "".join(f'[cameras.c{i}]\nwatch = ["incoming/c{i}"]\n' for i in range(300))
    config = write_config(tmp_path, extra)
    command = [sys.executable, "-m", "biaswatch", "check-config", "--config", str(config)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader leaves before the output comes, as `head` may
        stderr = process.stderr.read().decode()
        status = process.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert status == 141


@pytest.mark.parametrize("name", sorted(CASES))
def test_with_json_a_bad_argument_is_one_error_object_on_stdout(tmp_path: Path, name: str) -> None:
    """With --json each bad argument prints only {"error": ...} on stdout, with the same status."""
    args, status, words = CASES[name]
    config = write_config(tmp_path)
    command, rest = args[0], args[1:]
    result = run_cli(command, "--config", config, *rest, "--json")
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = json.loads(result.stdout).values()  # one object, one key: "error"
    assert set(json.loads(result.stdout)) == {"error"}
    assert error["exit_status"] == status and words in error["message"]


def test_with_json_a_config_error_lists_every_problem(tmp_path: Path) -> None:
    """A broken config under --json is one error object with status 78 and each problem."""
    config = tmp_path / "bad.toml"
    config.write_text("[service]\nnope = 1\n")
    result = run_cli("check-config", "--config", config, "--json")
    assert result.returncode == 78
    error = json.loads(result.stdout)["error"]
    assert error["exit_status"] == 78 and len(error["problems"]) == 2
    assert any("[service] nope: unknown key" in p for p in error["problems"])
