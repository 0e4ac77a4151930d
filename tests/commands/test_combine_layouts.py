"""`biaswatch combine --calibrated` writes the service's master for each layout (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.testing.fits import bias_stack, service_master, write_segment_stack, write_stack
from biaswatch.testing.helpers import run_cli

# Cards that differ between any two writes (time of writing, checksums) or say
# where the master came from (the command knows no camera, night or geometry label).
_PROVENANCE = {"DATE", "CHECKSUM", "DATASUM", "BWCAMERA", "BWNIGHT", "BWGEOM", "BWFPRINT"}
_PROVENANCE |= {"BWDIGEST", "BWMEMLIM", "NCOMBINE"} | {f"IMCMB{i:03d}" for i in range(1, 10)}


def inputs_for(tmp_path: Path, layout: str) -> list[Path]:
    """Calibrated work files of a layout: one image, 4 extensions, or 2 amplifiers."""
    frames = tmp_path / "frames"
    frames.mkdir()
    if layout == "mef":
        stacks = {f"AMP{i}": bias_stack(5, (16, 12), seed=i) + 30.0 * i for i in range(1, 5)}
        return write_segment_stack(frames, stacks)
    stack = bias_stack(5, (16, 24), seed=9)
    stack[:, 0, 0] = np.nan  # one masked pixel
    amps = {"BWNAMP": 2, "BWAN1": "A", "BWAS1": "[1:12,1:16]"}
    header = {**amps, "BWAN2": "B", "BWAS2": "[13:24,1:16]"} if layout == "amps" else None
    return write_stack(frames, stack, header)


@pytest.mark.parametrize("layout", ["one", "mef", "amps"])
def test_command_writes_the_services_master(tmp_path: Path, layout: str) -> None:
    """Every HDU of the command's master equals the service's: pixels, names and QC cards."""
    inputs = inputs_for(tmp_path, layout)
    output = tmp_path / "cli.fits"
    run_cli("combine", "--calibrated", "-o", output, "--mem-limit", "350MB", *inputs, check=True)
    with fits.open(output) as ours, fits.open(service_master(tmp_path, inputs)) as theirs:
        assert [h.name for h in ours] == [h.name for h in theirs]
        assert any(h.name.endswith("UNCERT") for h in ours)
        for mine, service in zip(ours, theirs, strict=True):
            if service.data is None:
                assert mine.data is None
            else:
                np.testing.assert_array_equal(mine.data, service.data)
            kept = [k for k in service.header if k not in _PROVENANCE]
            assert {k: mine.header.get(k) for k in kept} == {k: service.header[k] for k in kept}
