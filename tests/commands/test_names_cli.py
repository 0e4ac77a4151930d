"""Hostile file names through status, log and report: terminals see them escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog
from biaswatch.testing.helpers import write_config

ODD = os.fsdecode(b"bias_\xff\xfe.fits")  # not UTF-8: lone surrogates in a str


EVIL = "evil\x1b[2J\x1b]0;owned\x07" + os.fsdecode(b"\xff") + ".fits"


def test_status_and_log_print_hostile_file_names_escaped(tmp_path: Path) -> None:
    """`biaswatch status` and `biaswatch log` never send a file name's ESC to the terminal."""
    config = write_config(tmp_path)
    evil = tmp_path / "incoming" / "cryo" / EVIL
    catalog = Catalog(tmp_path / "state" / "catalog.sqlite")
    try:
        catalog.record_frame(FrameRecord(str(evil), "cryo", 1, 1, "rejected", reason="not FITS"))
    finally:
        catalog.close()
    (tmp_path / "log").mkdir()
    event = {"event": "frame.rejected", "level": "warning", "file": str(evil), "camera": "cryo"}
    line = json.dumps(event | {"timestamp": "2030-01-15T02:00:00Z"})
    (tmp_path / "log" / "biaswatch.jsonl").write_text(line + "\n", encoding="utf-8")
    # status exits 2 (Nagios CRITICAL): no service runs here; log exits 0.
    for command, status in (("status", 2), ("log", 0)):
        argv = [sys.executable, "-m", "biaswatch", command, "--config", str(config)]
        result = subprocess.run(argv, capture_output=True, check=False)
        assert result.returncode == status, (command, result.stderr)
        out = result.stdout
        assert b"\x1b" not in out and b"\x07" not in out, (command, out)
        assert b"evil\\x1b[2J\\x1b]0;owned\\x07\\xff.fits" in out, (command, out)


def test_the_night_report_lists_a_rejected_non_utf8_name_escaped(tmp_path: Path) -> None:
    """`biaswatch report` writes a rejected file whose name is not UTF-8 as bias_\\xff\\xfe."""
    config = write_config(tmp_path)
    odd = tmp_path / "incoming" / "cryo" / ODD
    catalog = Catalog(tmp_path / "state" / "catalog.sqlite")
    try:
        record = FrameRecord(str(odd), "cryo", 1, 1, "rejected", reason="bad", night="2030-01-14")
        catalog.record_frame(record)
    finally:
        catalog.close()
    page = tmp_path / "report.html"
    argv = [sys.executable, "-m", "biaswatch", "report", "--config", str(config)]
    subprocess.run([*argv, "--night", "2030-01-14", "-o", str(page)], check=True)
    assert "<td>bias_\\xff\\xfe.fits</td>" in page.read_text(encoding="utf-8")
