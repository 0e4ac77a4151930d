"""``biaswatch.calibrations.read_master`` on masters of one image and of several segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.nddata import CCDData

from biaswatch.calibrations import read_master
from biaswatch.testing.fits import bias_stack, service_master, write_segment_stack, write_stack


def test_a_segmented_master_is_read_one_segment_at_a_time(tmp_path: Path) -> None:
    """Each named segment reads as ccdproc's CCDData.read of its HDU, mask and uncertainty."""
    stacks = {f"AMP{i}": bias_stack(5, (16, 12), seed=i) + 30.0 * i for i in range(1, 3)}
    master = service_master(tmp_path, write_segment_stack(tmp_path, stacks))
    for name in stacks:
        ours = read_master(master, segment=name)
        reference = CCDData.read(
            master, hdu=name, hdu_mask=f"{name}_MASK", hdu_uncertainty=f"{name}_UNCERT"
        )
        np.testing.assert_array_equal(ours.data, reference.data)
        np.testing.assert_array_equal(ours.mask, reference.mask)
        np.testing.assert_array_equal(ours.uncertainty.array, reference.uncertainty.array)
        assert np.median(ours.data) == pytest.approx(np.median(stacks[name]), abs=1.0)


def test_a_segmented_master_without_a_segment_names_its_segments(tmp_path: Path) -> None:
    """No ``segment`` (or an unknown one) is a ValueError that lists the master's segments."""
    stacks = {f"AMP{i}": bias_stack(5, (16, 12), seed=i) for i in range(1, 3)}
    master = service_master(tmp_path, write_segment_stack(tmp_path, stacks))
    with pytest.raises(ValueError, match="has segments AMP1, AMP2: name one with segment="):
        read_master(master)
    with pytest.raises(ValueError, match="it has no 'AMP9'"):
        read_master(master, segment="AMP9")


def test_a_master_of_one_image_refuses_a_segment(tmp_path: Path) -> None:
    """A one-image master reads with no segment; naming one is an error, not a silent read."""
    master = service_master(tmp_path, write_stack(tmp_path, bias_stack(5, (16, 24), seed=3)))
    assert read_master(master).shape == (16, 24)
    with pytest.raises(ValueError, match="master of one image"):
        read_master(master, segment="A")
