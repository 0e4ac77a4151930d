"""Every camera layout of issue 13 through the real service, against ccdproc per segment.

One service watches five cameras built like the real ones issue 13 tried: an echelle
camera with three CCD extensions, DATASEC only and OBSTYPE; four amplifier extensions
at different levels; two amplifiers in one image with their overscans at the end of
the row, biases labelled as zero-second darks; a binned window (CCDSUM '2 1') labelled
'zero'; a spectrograph whose biases say OBJECT = 'bias' with ELAPTIME = 0 and a date
without its time, at two readout speeds. Flats, arcs, darks and science frames are mixed
in. Each master's segments are compared with the seed recipe run by ccdproc on each
segment (biaswatch.testing.reference): data within 1e-3 ADU, mask equal, uncertainty
within 1e-4 relative. ``biaswatch combine`` and ``backfill`` must give the same masters.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.layouts import (
    RawLayout,
    amplifiers_layout,
    binned_layout,
    date_cards,
    extensions_layout,
    single_layout,
    write_layout_frame,
)
from biaswatch.testing.reference import RecipeSegment, largest_difference, recipe_master
from biaswatch.testing.service import catalog_rows, rows_in, running_service

# numpy.ma inside ccdproc.combine (the reference) warns on this numpy.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BIASES = 5  # expected_frames: a set completes by count, after all its frames are in
# 2030: a night no clock rule closes while the suite runs (testing.helpers.write_config).
FIRST = dt.datetime(2030, 1, 15, 3, 0, tzinfo=dt.UTC)
NIGHT = "2030-01-14"  # Chicago's night of FIRST
# The tolerances: ccdproc's float64 against biaswatch's float32 master.
DATA_ADU, UNCERTAINTY_RELATIVE = 1e-3, 1e-4

CAMERAS = """
[cameras.echelle]
watch = ["incoming/echelle"]
bias_when = { OBSTYPE = "bias" }
[cameras.echelle.calibrate]
overscan = "auto"
trim = "header:DATASEC"

[cameras.quad]
watch = ["incoming/quad"]
[cameras.quad.calibrate]
overscan = "header:BIASSEC"
trim = "header:DATASEC"

[cameras.twoamp]
watch = ["incoming/twoamp"]
bias_when = { OBSTYPE = "dark", EXPTIME = 0 }
{amplifiers}

[cameras.binned]
watch = ["incoming/binned"]
[cameras.binned.calibrate]
overscan = "header:BIASSEC"
trim = "header:DATASEC"

[cameras.spectro]
watch = ["incoming/spectro"]
bias_when = { OBJECT = "bias", ELAPTIME = 0 }
group_by = ["CCDSPEED"]
"""


@dataclass(frozen=True, slots=True)
class Camera:
    """One camera of the run: its layout, how its biases and its other frames are labelled."""

    name: str
    layout: RawLayout
    bias: dict[str, object | None]
    others: dict[str, dict[str, object | None]]  # file stem -> cards of a frame that is no bias
    in_hdus: bool  # segments are image extensions (else regions of one image)


CAMERA_LIST = (
    Camera(
        "echelle",
        extensions_layout(3),
        {"OBSTYPE": "Bias", "IMAGETYP": None},
        {"flat": {"OBSTYPE": "FLAT", "IMAGETYP": None}, "arc": {"OBSTYPE": "ARC"}},
        in_hdus=True,
    ),
    Camera(
        "quad",
        extensions_layout(
            4, levels=(1000, 1100, 1200, 1300), names=("AMP1", "AMP2", "AMP3", "AMP4"), biassec=True
        ),
        {},
        {"flat": {"IMAGETYP": "FLAT", "EXPTIME": 3.0}},
        in_hdus=True,
    ),
    Camera(
        "twoamp",
        amplifiers_layout(),
        {"OBSTYPE": "DARK", "EXPTIME": 0, "IMAGETYP": None},
        {"dark": {"OBSTYPE": "DARK", "EXPTIME": 300.0, "IMAGETYP": None}},
        in_hdus=False,
    ),
    Camera(
        "binned",
        binned_layout(ccdsum="2 1"),
        {"IMAGETYP": "zero"},
        {"science": {"IMAGETYP": "OBJECT", "EXPTIME": 60.0}},
        in_hdus=False,
    ),
    Camera(
        "spectro",
        single_layout(),
        {"OBJECT": "bias", "ELAPTIME": 0, "OBSTYPE": "dark", "IMAGETYP": None, "EXPTIME": None},
        {"science": {"OBJECT": "HD 12345", "ELAPTIME": 300, "OBSTYPE": "dark", "IMAGETYP": None}},
        in_hdus=False,
    ),
)
SPEEDS = ("FAST", "SLOW")  # the spectrograph's two readout speeds: two sets in one night


@dataclass(frozen=True, slots=True)
class Run:
    """What one service run left: its config, the biases written per set, and the catalog."""

    config: Path
    sets: dict[tuple[str, str], list[Path]]  # (camera, speed or "") -> its biases
    others: dict[str, list[Path]]  # camera -> frames that are no bias
    masters: list[sqlite3.Row]
    frames: dict[str, sqlite3.Row]  # file name -> frame row


def _config(tmp_path: Path) -> Path:
    amplifiers = "\n".join(
        "[[cameras.twoamp.calibrate.amplifiers]]\n"
        + "\n".join(f"{key} = {json.dumps(value)}" for key, value in table.items())
        for table in CAMERA_LIST[2].layout.amplifier_tables()
    )
    config = write_config(
        tmp_path, CAMERAS.replace("{amplifiers}", amplifiers), expected_frames=BIASES
    )
    for camera in CAMERA_LIST:
        (tmp_path / "incoming" / camera.name).mkdir(parents=True, exist_ok=True)
    return config


def _when(index: int, date_only: bool) -> dict[str, object]:
    return date_cards(FIRST + dt.timedelta(seconds=index), date_only=date_only)


def _write(tmp_path: Path, camera: Camera, stem: str, seed: int, cards: dict[str, Any]) -> Path:
    date_only = camera.name == "spectro"  # DATE-OBS a date, its time in UT
    signal = 0.0 if stem.startswith("bias") else 500.0
    header = {**cards, **_when(seed, date_only)}
    path = tmp_path / "incoming" / camera.name / f"{stem}.fits"
    return write_layout_frame(path, camera.layout, seed=seed, signal=signal, header=header)


def _write_all(tmp_path: Path) -> tuple[dict[tuple[str, str], list[Path]], dict[str, list[Path]]]:
    """Non-biases first, then each set's biases: a set completes only once all are in."""
    sets: dict[tuple[str, str], list[Path]] = {}
    others: dict[str, list[Path]] = {}
    for number, camera in enumerate(CAMERA_LIST):
        others[camera.name] = [
            _write(tmp_path, camera, stem, 100 + i, cards)
            for i, (stem, cards) in enumerate(camera.others.items())
        ]
        speeds = SPEEDS if camera.name == "spectro" else ("",)
        for s, speed in enumerate(speeds):
            cards = {**camera.bias, **({"CCDSPEED": speed} if speed else {})}
            sets[camera.name, speed] = [
                _write(tmp_path, camera, f"bias{speed}{i}", 10 * number + 5 * s + i, cards)
                for i in range(BIASES)
            ]
    return sets, others


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One service run over every layout, until each of its six sets has a master."""
    tmp_path = tmp_path_factory.mktemp("layouts")
    config = _config(tmp_path)
    with running_service(config) as service:
        sets, others = _write_all(tmp_path)
        service.wait_event("master.published", timeout=240, count=len(sets))
        assert service.stop()[0] == 0
    masters = catalog_rows(config, "SELECT * FROM masters ORDER BY camera, geometry")
    frames = {
        f"{Path(r['path']).name}@{r['camera']}": r
        for r in catalog_rows(config, "SELECT * FROM frames")
    }
    yield Run(config, sets, others, masters, frames)


def _recipe_segments(camera: Camera) -> list[RecipeSegment]:
    return [
        RecipeSegment(
            s.name,
            s.name if camera.in_hdus else 0,
            overscan=s.overscan.fits_string(),
            data=s.data.fits_string(),
        )
        for s in camera.layout.segments
    ]


def _master_segments(path: Path, camera: Camera) -> dict[str, CCDData]:
    """The master's segments as CCDData with mask and uncertainty, as other code reads them."""
    if camera.in_hdus:
        return {
            s.name: CCDData.read(
                path, hdu=s.name, hdu_mask=f"{s.name}_MASK", hdu_uncertainty=f"{s.name}_UNCERT"
            )
            for s in camera.layout.segments
        }
    whole = CCDData.read(path)
    if camera.name != "twoamp":
        return {camera.layout.segments[0].name: whole}
    # Amplifiers at their raw positions in the calibrated image, columns from the first.
    first = min(s.data.x1 for s in camera.layout.segments)
    return {
        s.name: whole[:, s.data.x1 - first : s.data.x2 - first + 1] for s in camera.layout.segments
    }


def _master_of(run: Run, camera: str, speed: str) -> sqlite3.Row:
    rows = [m for m in run.masters if m["camera"] == camera]
    if camera == "spectro":
        rows = [m for m in rows if speed.lower() in str(m["geometry"]).lower()]
    assert len(rows) == 1, f"{camera} {speed}: {[dict(m) for m in rows]}"
    return rows[0]


def test_every_set_of_every_layout_has_one_master(run: Run) -> None:
    """Six sets (the spectrograph's two speeds apart) give six masters, each of its five biases."""
    assert sorted((m["camera"], m["ncombine"]) for m in run.masters) == sorted(
        (camera, BIASES) for camera, _ in run.sets
    )
    spectro = sorted(str(m["geometry"]) for m in run.masters if m["camera"] == "spectro")
    assert len(set(spectro)) == 2  # two configurations, two labels


@pytest.mark.parametrize(
    ("camera", "speed"),
    [(c.name, s) for c in CAMERA_LIST for s in (SPEEDS if c.name == "spectro" else ("",))],
)
def test_each_segment_equals_ccdproc_per_segment(run: Run, camera: str, speed: str) -> None:
    """Every segment's data, mask and uncertainty equal the seed recipe run by ccdproc on it."""
    layout = next(c for c in CAMERA_LIST if c.name == camera)
    master = _master_of(run, camera, speed)
    reference = recipe_master(run.sets[camera, speed], _recipe_segments(layout))
    mine = _master_segments(Path(master["path"]), layout)
    assert sorted(mine) == sorted(reference)
    for name, expected in reference.items():
        data, uncertainty, masks = largest_difference(mine[name], expected)
        assert data <= DATA_ADU, f"{camera} {name}: data differs by {data} ADU"
        assert uncertainty <= UNCERTAINTY_RELATIVE, f"{camera} {name}: uncertainty {uncertainty}"
        assert masks == 0, f"{camera} {name}: {masks} mask pixels differ"


def test_no_step_at_the_amplifier_boundary(run: Run) -> None:
    """Two amplifiers at 944 and 966 ADU, each with its own overscan, meet without a step."""
    data = fits.getdata(_master_of(run, "twoamp", "")["path"])
    boundary = amplifiers_layout().segments[0].data.x2  # the last column of amplifier A
    left = float(np.median(data[:, boundary - 8 : boundary]))
    right = float(np.median(data[:, boundary : boundary + 8]))
    assert abs(left - right) < 1.5  # one overscan for both would leave 22 ADU


def test_the_binned_master_says_its_binning(run: Run) -> None:
    """A CCDSUM '2 1' window gives a master whose name and BWGEOM say 2x1."""
    master = _master_of(run, "binned", "")
    assert "2x1" in Path(master["path"]).name
    assert "2x1" in str(fits.getheader(master["path"])["BWGEOM"])


def test_a_date_without_its_time_takes_it_from_ut(run: Run) -> None:
    """The spectrograph's biases are dated from DATE-OBS plus UT, not from their files' mtime."""
    for speed in SPEEDS:
        for path in run.sets["spectro", speed]:
            row = run.frames[f"{path.name}@spectro"]
            assert row["night"] == NIGHT
            assert str(row["date_obs"]).startswith("2030-01-15T03:00:")


def test_non_biases_are_ignored_with_their_reason(run: Run) -> None:
    """Flats, arcs, darks and science frames are recorded as ignored, saying why."""
    for camera, paths in run.others.items():
        for path in paths:
            row = run.frames[f"{path.name}@{camera}"]
            assert row["status"] == "ignored", dict(row)
            assert row["reason"], dict(row)


@pytest.mark.parametrize("camera", [c.name for c in CAMERA_LIST if c.name != "spectro"])
def test_biaswatch_combine_gives_the_services_master(run: Run, camera: str, tmp_path: Path) -> None:
    """`biaswatch combine --camera` on the same raw biases writes the same segments."""
    layout = next(c for c in CAMERA_LIST if c.name == camera)
    out = tmp_path / "once.fits"
    run_cli(
        "combine",
        "--config",
        run.config,
        "--camera",
        camera,
        "-o",
        out,
        *run.sets[camera, ""],
        check=True,
    )
    service = _master_segments(Path(_master_of(run, camera, "")["path"]), layout)
    once = _master_segments(out, layout)
    for name, ccd in service.items():
        assert np.array_equal(np.asarray(once[name].data), np.asarray(ccd.data)), name


def test_backfill_gives_the_services_masters(run: Run, tmp_path: Path) -> None:
    """`biaswatch backfill` over the same directories, on a fresh catalog, makes equal masters."""
    fresh = tmp_path / "config.toml"
    fresh.write_text(
        run.config.read_text()
        .replace('state_dir = "state"', f'state_dir = "{tmp_path / "state"}"')
        .replace('masters_dir = "masters"', f'masters_dir = "{tmp_path / "masters"}"')
        .replace('"incoming/', f'"{run.config.parent / "incoming"}/')
    )
    for camera in CAMERA_LIST:
        directory = run.config.parent / "incoming" / camera.name
        run_cli("backfill", "--config", fresh, "--camera", camera.name, directory, check=True)
    rows = rows_in(tmp_path / "state", "SELECT camera, geometry, path FROM masters")
    backfilled = {(r["camera"], r["geometry"]): r["path"] for r in rows}
    assert sorted(backfilled) == sorted((m["camera"], m["geometry"]) for m in run.masters)
    for master in run.masters:
        layout = next(c for c in CAMERA_LIST if c.name == master["camera"])
        theirs = _master_segments(Path(backfilled[master["camera"], master["geometry"]]), layout)
        for name, ccd in _master_segments(Path(master["path"]), layout).items():
            assert np.array_equal(np.asarray(theirs[name].data), np.asarray(ccd.data)), name
