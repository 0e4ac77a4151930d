"""Each segment's level, read noise and noise shown by status, masters and the night report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import pytest

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.cli.main import build_parser
from biaswatch.cli.masters import list_masters
from biaswatch.cli.status import gather, render_status
from biaswatch.config import load_config
from biaswatch.publish.report import write_report
from biaswatch.rules.qc import MasterQC
from biaswatch.testing.helpers import valid_frame

NIGHT = dt.date(2026, 11, 24)
NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
SEGMENTS = (
    ("CCD1", MasterQC(944.125, 1.5, 4.75, 1.5, 0)),
    ("CCD2", MasterQC(966.5, 1.625, 5.25, 1.66, 2)),
)


def config_with_master(tmp_path: Path, segments: tuple[tuple[str, MasterQC], ...]) -> Path:
    """A config whose catalog holds one accepted master of camera cryo with these segments."""
    config = tmp_path / "config.toml"
    config.write_text('[service]\nstate_dir = "state"\n[cameras.cryo]\nwatch = ["in"]\n')
    catalog = Catalog(tmp_path / "state" / "catalog.sqlite")
    set_id = catalog.add_to_set(valid_frame("a.fits"))
    row = MasterRow("cryo", NIGHT.isoformat(), 1, "56x40-1x1", "/m/bias_1.fits", 3, "d", "t")
    quality = MasterQC(955.3125, 1.625, 5.25, 1.66, 2)
    catalog.record_master(set_id, replace(row, qc=quality, segments=segments))
    catalog.close()
    return config


def masters_args(config: Path, *, as_json: bool) -> argparse.Namespace:
    """``biaswatch masters`` options, from the real parser: everything listed."""
    return build_parser().parse_args(
        ["masters", "--config", str(config), *(["--json"] if as_json else [])]
    )


def test_status_shows_each_segment_of_the_last_master(tmp_path: Path) -> None:
    """status lists each segment's level, read noise and noise, in text and in JSON."""
    report = gather(load_config(config_with_master(tmp_path, SEGMENTS)), NOW, {})
    (camera,) = report["cameras"]
    assert [s["name"] for s in camera["last_master"]["segments"]] == ["CCD1", "CCD2"]
    assert camera["last_master"]["segments"][1]["read_noise"] == 5.25
    text = render_status(report)
    assert "    segment CCD1: level 944.125 ADU, read noise 4.75 ADU, noise 1.5 ADU" in text
    assert "segment CCD2: level 966.5 ADU, read noise 5.25 ADU, noise 1.625 ADU" in text


def test_status_of_a_master_of_one_segment_shows_no_segment_line(tmp_path: Path) -> None:
    """A master of one segment has an empty segment list and no segment line."""
    report = gather(load_config(config_with_master(tmp_path, ())), NOW, {})
    assert report["cameras"][0]["last_master"]["segments"] == []
    assert "segment" not in render_status(report)


def test_masters_lists_segments_under_their_master(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has a line per segment; --json gives [{name, level, read_noise, noise...}]."""
    config = config_with_master(tmp_path, SEGMENTS)
    assert list_masters(masters_args(config, as_json=False)) == 0
    table = capsys.readouterr().out
    assert "segment CCD2: level 966.50 ADU, read noise 5.25 ADU, noise 1.62 ADU" in table
    assert list_masters(masters_args(config, as_json=True)) == 0
    (master,) = json.loads(capsys.readouterr().out)
    assert master["segments"][0] == {
        "name": "CCD1",
        "level": 944.125,
        "noise": 1.5,
        "read_noise": 4.75,
        "expected_noise": 1.5,
        "hot_columns": 0,
        "rejected_fraction": 0.0,
    }


def test_the_night_report_has_a_row_per_segment(tmp_path: Path) -> None:
    """The morning page's masters table shows each segment's level, read noise and noise."""
    config = config_with_master(tmp_path, SEGMENTS)
    page = write_report(load_config(config), NIGHT, tmp_path / "night.html", NOW).read_text()
    assert (
        "<td>&nbsp;&nbsp;segment CCD2</td><td></td><td></td><td>966.50</td><td>5.25</td>"
        "<td>1.62 (1.66)</td><td>2</td>"
    ) in page
