"""``biaswatch log``'s sources: a log file through rotation, and journal entries."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from biaswatch import journald
from biaswatch.cli import log as logview
from biaswatch.cli.options import LOG_LEVELS
from biaswatch.testing.helpers import write_config


def line(event: str, **fields: Any) -> str:
    """One JSON log line for ``event``."""
    return json.dumps({"event": event, "level": "info", **fields}) + "\n"


def test_follow_reads_through_a_rename(tmp_path: Path) -> None:
    """--follow reads the renamed file to its end, then the new file at the same path."""
    path = tmp_path / "biaswatch.jsonl"
    path.write_text(line("first"))
    events = logview._file_events(path, path.open(encoding="utf-8"), follow=True)
    assert next(events)["event"] == "first"
    path.rename(tmp_path / "biaswatch.jsonl.1")
    with (tmp_path / "biaswatch.jsonl.1").open("a") as old:
        old.write(line("late"))  # written by the service before it saw the rename
    path.write_text(line("second"))
    assert [next(events)["event"] for _ in range(2)] == ["late", "second"]
    events.close()


def test_follow_reads_a_truncated_file_from_the_top(tmp_path: Path) -> None:
    """After copytruncate empties the file, --follow reads the new lines from its start."""
    path = tmp_path / "biaswatch.jsonl"
    path.write_text(line("first") + line("second"))
    events = logview._file_events(path, path.open(encoding="utf-8"), follow=True)
    assert [next(events)["event"] for _ in range(2)] == ["first", "second"]
    path.write_text(line("third"))  # shorter than what was read: truncated, then written
    assert next(events)["event"] == "third"
    events.close()


def test_half_written_line_waits(tmp_path: Path) -> None:
    """A line without its newline yet is not read until it is complete."""
    path = tmp_path / "biaswatch.jsonl"
    path.write_text(line("first") + '{"event": "sec')
    assert [e["event"] for e in logview._file_events(path, path.open(), follow=False)] == ["first"]


def test_missing_log_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no log file yet, `biaswatch log` says so in one line and exits 1."""
    config = write_config(tmp_path)
    args = argparse.Namespace(config=config, camera=None, night=None, level="info", follow=False)
    assert logview.show_log(args) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert "biaswatch.jsonl" in err
    assert "No such file" in err


def test_journal_entry_holding_json() -> None:
    """An entry whose MESSAGE is the service's JSON gives that event back whole."""
    event = {"event": "frame.rejected", "level": "warning", "camera": "cryo"}
    entry = {"MESSAGE": json.dumps(event), "PRIORITY": "4", "__REALTIME_TIMESTAMP": "1"}
    assert logview.journal_event(entry) == event


def test_journal_entry_plain_line() -> None:
    """A plain line (a traceback on stderr) gets the entry's priority as level and its time."""
    entry = {"MESSAGE": "Traceback (most recent call last):", "PRIORITY": "3"}
    entry["__REALTIME_TIMESTAMP"] = "1764900000123456"  # µs since 1970: 2025-12-05 02:00:00
    event = logview.journal_event(entry)
    assert event == {
        "event": "Traceback (most recent call last):",
        "level": "error",
        "timestamp": "2025-12-05T02:00:00.123456+00:00",
    }
    assert logview.render_event(event).startswith("2025-12-05 02:00:00Z ERROR   Traceback")


def test_journal_entry_not_utf8() -> None:
    """A MESSAGE journalctl gives as a byte array (not UTF-8) is shown with its bytes escaped."""
    entry = {"MESSAGE": list(b"bad \xff byte"), "PRIORITY": "6", "__REALTIME_TIMESTAMP": "0"}
    event = logview.journal_event(entry)
    assert event is not None
    assert event["event"] == "bad \\xff byte"
    assert logview.journal_event({"PRIORITY": "6"}) is None  # no MESSAGE: nothing to show


def test_journal_priority_read_back_as_its_level() -> None:
    """Each level survives journald.priority and back; notice reads as info, junk as info."""
    for level in LOG_LEVELS:
        entry = {"MESSAGE": "plain", "PRIORITY": str(journald.priority(level))}
        assert logview.journal_event(entry | {"__REALTIME_TIMESTAMP": "0"}) == {
            "event": "plain",
            "level": level,
            "timestamp": "1970-01-01T00:00:00+00:00",
        }
    assert [logview._level_of(p) for p in ("0", "5", "junk")] == ["critical", "info", "info"]
