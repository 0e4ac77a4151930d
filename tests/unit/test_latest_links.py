"""Each configuration's ``latest-<label>.fits`` link, kept beside ``latest.fits``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.publish.master import latest_link, repair_latest
from biaswatch.testing.helpers import valid_frame


def recorded_master(
    catalog: Catalog, masters: Path, geometry: str, sequence: int, state: str = "accepted"
) -> Path:
    """A small master file of tonight recorded in the catalog with this geometry and state."""
    path = masters / "cryo" / "2026-11-24" / f"bias_cryo_2026-11-24_{sequence:03d}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(path)
    set_id = catalog.add_to_set(valid_frame(f"f{sequence}.fits", geometry=geometry))
    row = MasterRow("cryo", "2026-11-24", sequence, geometry, str(path), 1, "d", "t")
    catalog.record_master(set_id, replace(row, state=state))
    return path


def test_each_configuration_link_points_at_its_newest_accepted_master(
    catalog: Catalog, tmp_path: Path
) -> None:
    """Two configurations: latest.fits on the newest of all, each latest-<label> on its own."""
    masters = tmp_path / "masters"
    first = recorded_master(catalog, masters, "56x40-1x1", 1)
    binned = recorded_master(catalog, masters, "56x40-2x1", 2)
    recorded_master(catalog, masters, "56x40-1x1", 3, state="rejected")
    repair_latest(catalog, masters, set())
    assert latest_link(masters, "cryo").resolve() == binned.resolve()
    assert latest_link(masters, "cryo", "56x40-1x1").resolve() == first.resolve()
    assert latest_link(masters, "cryo", "56x40-2x1").resolve() == binned.resolve()
    assert latest_link(masters, "cryo", "56x40-2x1").name == "latest-56x40-2x1.fits"


def test_a_configuration_with_no_accepted_master_loses_its_link(
    catalog: Catalog, tmp_path: Path
) -> None:
    """When its only master is rejected by a person, the configuration's link is removed."""
    masters = tmp_path / "masters"
    kept = recorded_master(catalog, masters, "56x40-1x1", 1)
    binned = recorded_master(catalog, masters, "56x40-2x1", 2)
    repair_latest(catalog, masters, set())
    catalog.judge_master(str(binned), "rejected", "someone", "light leak")
    repair_latest(catalog, masters, set())
    assert not latest_link(masters, "cryo", "56x40-2x1").is_symlink()
    assert latest_link(masters, "cryo").resolve() == kept.resolve()
    assert binned.is_file()  # the master itself is never touched


def test_a_label_never_makes_a_link_outside_its_camera_directory(tmp_path: Path) -> None:
    """Characters a file name cannot hold safely are written as underscores."""
    assert latest_link(tmp_path, "cryo", "a/../b c").name == "latest-a_.._b_c.fits"
