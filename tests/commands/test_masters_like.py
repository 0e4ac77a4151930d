"""Downstream finds the master of its frame's configuration: by link, and by ``masters --like``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from astropy.io import fits

from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.layouts import binned_layout, date_cards, single_layout, write_layout_frame
from biaswatch.testing.service import catalog_rows

NIGHT = "2025-03-10"  # 03:00 UTC on 2025-03-11 is this evening in Chicago


def write_configuration(directory: Path, xbin: int, seed: int) -> list[Path]:
    """Three cryo biases of one evening binned ``xbin`` x 1 (CCDSUM), from testing.layouts."""
    directory.mkdir(parents=True)
    shape = {"rows": 40, "data_cols": 48, "overscan_cols": 8}
    layout = single_layout(**shape) if xbin == 1 else binned_layout(**shape, ccdsum=f"{xbin} 1")
    first = dt.datetime(2025, 3, 11, 3, 0, tzinfo=dt.UTC)
    return [
        write_layout_frame(
            directory / f"b{i}.fits",
            layout,
            seed=seed + i,
            header=date_cards(first + dt.timedelta(seconds=i)),
        )
        for i in range(3)
    ]


def reduction_finds(config: Path, frame: Path) -> Path:
    """What a frame's reduction code runs: ``masters --for TIME --camera cryo --like FRAME``."""
    when = str(fits.getheader(frame)["DATE-OBS"])
    found = run_cli(
        *("masters", "--config", config, "--camera", "cryo", "--for", when, "--like", frame),
        check=True,
    )
    return Path(found.stdout.strip())


def test_each_configuration_has_its_link_and_masters_like_finds_it(tmp_path: Path) -> None:
    """Unbinned and 2x1-binned biases of one night: each frame finds its own master both ways."""
    config = write_config(tmp_path, expected_frames=3, min_frames=3)
    archive = tmp_path / "archive"
    unbinned = write_configuration(archive / "unbinned", 1, 10)
    binned = write_configuration(archive / "binned", 2, 20)
    done = run_cli(
        *("backfill", "--config", config, "--camera", "cryo", archive),
        check=True,
    )
    assert "2 master(s)" in done.stdout
    masters = {
        m["geometry"]: Path(m["path"]) for m in catalog_rows(config, "SELECT * FROM masters")
    }
    assert sorted(masters) == ["56x40-1x1", "56x40-2x1"]
    camera_dir = tmp_path / "masters" / "cryo"
    for label, master in masters.items():
        assert (camera_dir / f"latest-{label}.fits").resolve() == master.resolve()
    assert reduction_finds(config, unbinned[0]) == masters["56x40-1x1"]
    assert reduction_finds(config, binned[2]) == masters["56x40-2x1"]
    listed = run_cli("masters", "--config", config, "--camera", "cryo", "--like", binned[0])
    assert str(masters["56x40-2x1"]) in listed.stdout
    assert str(masters["56x40-1x1"]) not in listed.stdout
    # --current with --like: that configuration's current master, even when the camera's
    # newest (latest.fits) is the other configuration's
    newest = (camera_dir / "latest.fits").resolve()
    older = next(label for label, path in masters.items() if path.resolve() != newest)
    frame = unbinned[1] if older == "56x40-1x1" else binned[1]
    current = run_cli(
        *("masters", "--config", config, "--camera", "cryo", "--current", "--like", frame),
        "--json",
        check=True,
    )
    assert [m["path"] for m in json.loads(current.stdout)] == [str(masters[older])]


def test_like_a_configuration_without_a_master_says_so(tmp_path: Path) -> None:
    """A frame of a configuration never combined gets no master, and the exit status says it."""
    config = write_config(tmp_path)
    (frame,) = write_configuration(tmp_path / "raw", 4, 30)[:1]
    found = run_cli(
        *("masters", "--config", config, "--camera", "cryo", "--for", "2025-03-11T03:00:00"),
        *("--like", frame),
    )
    assert found.returncode == 1
    assert "no accepted master for camera cryo of b0.fits's configuration" in found.stdout


def test_like_needs_a_camera(tmp_path: Path) -> None:
    """--like without --camera is refused with the reason."""
    config = write_config(tmp_path)
    (frame,) = write_configuration(tmp_path / "raw", 1, 40)[:1]
    refused = run_cli("masters", "--config", config, "--like", frame)
    assert refused.returncode != 0 and "--like needs --camera" in refused.stderr
