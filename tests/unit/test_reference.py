"""The per-segment ccdproc reference that layout tests compare masters with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.reference import RecipeSegment, largest_difference, recipe_master

CRYO = RecipeSegment("", 0, overscan="[49:56,1:40]", data="[1:48,1:40]")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy.ma inside ccdproc.combine
def test_the_recipe_removes_the_overscan_level_and_gives_an_uncertainty(tmp_path: Path) -> None:
    """Frames 20 ADU above their overscan give a master near 20 with noise/sqrt(N) uncertainty."""
    raws = [write_cryo_raw(tmp_path / f"r{i}.fits", i, image_offset=20.0) for i in range(8)]
    master = recipe_master(raws, [CRYO])[""]
    assert master.data.shape == (40, 48)
    assert abs(float(np.median(master.data)) - 20.0) < 1.0
    # ccdproc: std of the kept values / sqrt(their number); 5 ADU over sqrt(8) is 1.8.
    assert 1.0 < float(np.median(master.uncertainty.array)) < 2.6


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_difference_is_measured_in_data_uncertainty_and_mask(tmp_path: Path) -> None:
    """largest_difference sees a shifted pixel, a scaled uncertainty and a flipped mask bit."""
    raws = [write_cryo_raw(tmp_path / f"r{i}.fits", i) for i in range(4)]
    reference = recipe_master(raws, [CRYO])[""]
    assert largest_difference(reference, reference) == (0.0, 0.0, 0)
    changed = reference.copy()
    changed.data[3, 4] += 0.5
    changed.uncertainty.array[0, 0] *= 1.1
    changed.mask = np.zeros(reference.data.shape, bool)
    changed.mask[1, 1] = True
    data, relative, masks = largest_difference(changed, reference)
    assert data == pytest.approx(0.5)
    assert relative == pytest.approx(0.1)
    assert masks == (1 if reference.mask is None or not reference.mask[1, 1] else 0)
