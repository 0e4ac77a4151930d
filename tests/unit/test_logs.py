"""Logging: JSON lines with event, level, timestamp and context; readable on a terminal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import structlog

from biaswatch import logs

# Each test configures the root logger: conftest.py puts it back afterwards.
pytestmark = pytest.mark.usefixtures("restore_logging")


def test_json_lines_with_context(tmp_path: Path) -> None:
    """Each event is one JSON object with event, level, UTC timestamp and its bound context."""
    path = tmp_path / "log" / "biaswatch.jsonl"
    logs.configure(path, "info", console=False)
    structlog.get_logger("t").bind(camera="cryo", night="2026-11-24").info("set.completed", set=3)
    structlog.get_logger("t").debug("frame.incomplete")  # below the level: not written
    (line,) = path.read_text().splitlines()
    event = json.loads(line)
    assert event["event"] == "set.completed"
    assert (event["level"], event["camera"], event["night"], event["set"]) == (
        "info",
        "cryo",
        "2026-11-24",
        3,
    )
    assert event["timestamp"].endswith("Z")


def test_console_view_is_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the console view on, stderr shows readable lines while the file keeps JSON."""
    path = tmp_path / "biaswatch.jsonl"
    logs.configure(path, "info", console=True)
    structlog.get_logger("t").warning("frame.rejected", reason="not a FITS file")
    shown = capsys.readouterr().err
    assert "frame.rejected" in shown
    assert "reason" in shown
    assert not shown.lstrip().startswith("{")
    assert json.loads(path.read_text())["reason"] == "not a FITS file"


def test_apscheduler_info_is_quiet(tmp_path: Path) -> None:
    """apscheduler's per-job INFO chatter stays out of the log; its warnings do not."""
    path = tmp_path / "biaswatch.jsonl"
    logs.configure(path, "info", console=False)
    logging.getLogger("apscheduler.scheduler").info("Added job")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == [
        "Run time of job was missed"
    ]


def test_stdout_when_dash(capsys: pytest.CaptureFixture[str]) -> None:
    """log_file '-' (None here) writes JSON to standard output when not on a terminal."""
    logs.configure(None, "info", console=False)
    structlog.get_logger("t").info("service.started")
    assert json.loads(capsys.readouterr().out)["event"] == "service.started"


def test_file_reopened_after_rename(tmp_path: Path) -> None:
    """After logrotate renames the log, the next event goes to a new file at the old path."""
    path = tmp_path / "biaswatch.jsonl"
    logs.configure(path, "info", console=False)
    structlog.get_logger("t").info("before.rotation")
    path.rename(tmp_path / "biaswatch.jsonl.1")
    structlog.get_logger("t").info("after.rotation")
    assert json.loads((tmp_path / "biaswatch.jsonl.1").read_text())["event"] == "before.rotation"
    assert json.loads(path.read_text())["event"] == "after.rotation"
