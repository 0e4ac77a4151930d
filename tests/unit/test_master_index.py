"""Each camera's index.json: made from the catalog, rewritten whole, readable with json alone."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from astropy.io import fits
from structlog.testing import capture_logs

from biaswatch.catalog.store import Catalog
from biaswatch.combine.master_file import MasterInfo, master_header, master_path, write_temporary
from biaswatch.publish.index import (
    IndexSettings,
    index_path,
    write_index,
    write_json_atomically,
)
from biaswatch.publish.master import NewMaster, publish_master
from biaswatch.publish.placement import judge_and_move
from biaswatch.rules.qc import MasterQC
from biaswatch.settings import CombineSettings
from biaswatch.testing.helpers import valid_frame

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
SETTINGS = IndexSettings(ZoneInfo("America/Chicago"), dt.time(12, 0), 30.0)
INFO = MasterInfo(
    camera="cryo",
    night="2026-11-21",
    sequence=1,
    geometry="48x40-1x1",
    raw_names=("a.fits", "b.fits", "c.fits"),
    settings=CombineSettings(),
    mem_limit=350_000_000,
    input_digest="ab" * 32,
)


def publish(catalog: Catalog, masters: Path, night: str, level: float) -> Path:
    """Publish a master of ``night`` at ``level`` ADU, then write the index as the service does."""
    set_id = catalog.add_to_set(valid_frame(f"{night}.fits", night=night))
    info = replace(INFO, night=night)
    final = master_path(masters, info)
    temporary = write_temporary(np.ones((4, 6)), master_header(fits.Header(), info), final)
    quality = MasterQC(level, 2.0, 5.0, 2.9, 0)
    path = publish_master(catalog, masters, NewMaster(set_id, info, final, quality), temporary, NOW)
    write_index(catalog, masters, "cryo", SETTINGS, NOW)
    return path


def read_index(masters: Path) -> dict[str, object]:
    """The camera's index as any reader sees it: plain json."""
    loaded = json.loads((masters / "cryo" / "index.json").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def four_masters(catalog: Catalog, masters: Path) -> list[Path]:
    """Three accepted masters (nights 21-23) and a fourth, 300 ADU off, rejected (night 24)."""
    levels = {"2026-11-21": 1000.0, "2026-11-22": 1000.3, "2026-11-23": 999.8}
    paths = [publish(catalog, masters, night, level) for night, level in levels.items()]
    return [*paths, publish(catalog, masters, "2026-11-24", 1300.0)]


def test_the_index_after_publication_lists_every_master_with_its_fields(
    catalog: Catalog, tmp_path: Path
) -> None:
    """Format, camera, validity from the night's start, QC, state, the latest flag, in order."""
    masters = tmp_path / "masters"
    paths = four_masters(catalog, masters)
    index = read_index(masters)
    assert (index["format"], index["version"], index["camera"]) == (
        "biaswatch-masters-index",
        1,
        "cryo",
    )
    assert (index["updated"], index["max_age_days"]) == ("2026-11-25T12:00:00+00:00", 30.0)
    entries = index["masters"]
    assert isinstance(entries, list)
    assert [(e["night"], e["sequence"]) for e in entries] == [
        (f"2026-11-2{day}", 1) for day in (1, 2, 3, 4)
    ]
    assert [e["path"] for e in entries] == [str(p) for p in paths]
    first, third, rejected = entries[0], entries[2], entries[3]
    assert first["file"] == "2026-11-21/bias_cryo_2026-11-21_01_48x40-1x1.fits"
    assert rejected["file"] == "rejected/2026-11-24/rejected_cryo_2026-11-24_01_48x40-1x1.fits"
    # Night 2026-11-21 began at noon in Chicago (CST, UTC-6): 18:00 UTC.
    assert first["night_start"] == "2026-11-21T18:00:00+00:00"
    assert first["valid_from"] == "2026-10-22T18:00:00+00:00"
    assert first["valid_until"] == "2026-12-21T18:00:00+00:00"
    assert (first["configuration"], first["segments"], first["ncombine"]) == ("48x40-1x1", [], 3)
    assert first["qc"] == {"level": 1000.0, "read_noise": 5.0, "noise": 2.0}
    assert (first["state"], first["judged_by"], first["created"]) == (
        "accepted",
        "biaswatch",
        NOW.isoformat(),
    )
    assert [e["latest"] for e in entries] == [False, False, True, False]
    assert third["state"] == "accepted"
    assert rejected["state"] == "rejected"
    assert str(rejected["judgement"]).startswith("level 1300.00 ADU")


def test_the_index_after_a_verdict_follows_the_catalog(catalog: Catalog, tmp_path: Path) -> None:
    """Accepting the rejected master moves it in the index: new file, state, judge, latest."""
    masters = tmp_path / "masters"
    rejected = four_masters(catalog, masters)[3]
    moved = judge_and_move(catalog, str(rejected), "accepted", "someone", "new controller")
    write_index(catalog, masters, "cryo", SETTINGS, NOW)
    last = read_index(masters)["masters"]
    assert isinstance(last, list)
    entry = last[3]
    assert entry["file"] == "2026-11-24/bias_cryo_2026-11-24_01_48x40-1x1.fits"
    assert (entry["path"], entry["state"]) == (moved.path, "accepted")
    assert (entry["judged_by"], entry["judgement"]) == ("someone", "new controller")
    assert [e["latest"] for e in last] == [False, False, False, True]


def test_an_atomic_write_leaves_no_partial_file_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary is in the target's folder; a failed replace removes it, the old index stays."""
    target = tmp_path / "cryo" / "index.json"
    write_json_atomically(target, {"old": True})
    sources: list[Path] = []

    def failing_replace(source: str | os.PathLike[str], _target: object) -> None:
        sources.append(Path(source))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        write_json_atomically(target, {"new": True})
    assert [s.parent for s in sources] == [target.parent]  # same folder: rename is atomic
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.json"]
    assert json.loads(target.read_text()) == {"old": True}


def test_an_index_that_cannot_be_written_is_logged_and_nothing_raises(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A camera folder that is a file: index.write_failed with the error, None returned."""
    masters = tmp_path / "masters"
    masters.mkdir()
    (masters / "cryo").write_text("not a folder")
    with capture_logs() as logs:
        assert write_index(catalog, masters, "cryo", SETTINGS, NOW) is None
    (failed,) = [e for e in logs if e["event"] == "index.write_failed"]
    assert failed["camera"] == "cryo" and "FileExistsError" in failed["error"]
    assert index_path(masters, "cryo") == masters / "cryo" / "index.json"


def test_a_killed_writers_temporary_is_removed_by_the_next_write(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A .index.json.*.tmp left by a SIGKILLed writer goes at the next write, under the lock."""
    masters = tmp_path / "masters"
    leftover = masters / "cryo" / ".index.json.k1ll3d.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_text('{"partial": ')
    assert write_index(catalog, masters, "cryo", SETTINGS, NOW) == masters / "cryo" / "index.json"
    assert sorted(p.name for p in leftover.parent.iterdir()) == ["index.json"]
    assert read_index(masters)["masters"] == []
