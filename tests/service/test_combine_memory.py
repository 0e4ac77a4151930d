"""A combine's peak memory, measured in a child process of its own (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.testing.fits import write_segment_stack

# The child: warm up (threads started, code loaded), reset the peak RSS, combine with
# `limit`, print how far the peak rose above the RSS before. {combine} is the call.
MEMORY_CHILD = """
import sys
from pathlib import Path
from biaswatch.combine.engine import combine_files, warm_up
from biaswatch.combine.segments import combine_segments
from biaswatch.settings import CombineSettings

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

paths, limit = [Path(p) for p in sys.argv[2:]], int(sys.argv[1])
warm_up()
{combine}(paths[:2], CombineSettings(), 10**9)  # threads started, code loaded
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS, proc(5)
before = vm("VmRSS")
result = {combine}(paths, CombineSettings(), limit)
{check}
print(vm("VmHWM") - before)
"""


def peak_above_baseline(combine: str, mem_limit: int, paths: list[Path], check: str = "") -> int:
    """Bytes the child's peak RSS rose above its RSS before ``combine(paths, ..., mem_limit)``."""
    code = MEMORY_CHILD.replace("{combine}", combine).replace("{check}", check)
    result = subprocess.run(
        [sys.executable, "-c", code, str(mem_limit), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


@pytest.mark.parametrize("n_frames", [5, 10, 50])
def test_peak_memory_above_baseline_within_mem_limit(tmp_path: Path, n_frames: int) -> None:
    """A combine's peak RSS above the process's RSS before it stays within mem_limit."""
    rng = np.random.default_rng(n_frames)
    paths = []
    for i in range(n_frames):
        path = tmp_path / f"cal{i}.fits"
        fits.PrimaryHDU(rng.normal(0, 8, (384, 2048)).astype(np.float32)).writeto(path)
        paths.append(path)
    mem_limit = 24_000_000  # many bands: 384 x 2048 x n_frames float32 is 16-157 MB
    above = peak_above_baseline("combine_files", mem_limit, paths)
    assert 0 < above <= mem_limit, f"{above / 1e6:.1f} MB above baseline, limit 24 MB"


def test_mef_peak_memory_with_planes_within_mem_limit(tmp_path: Path) -> None:
    """Four segments combined with MASK and UNCERT stay within mem_limit above the baseline."""
    rng = np.random.default_rng(4)
    stacks = {f"AMP{i}": rng.normal(0, 8, (10, 384, 1024)).astype(np.float32) for i in range(1, 5)}
    paths = write_segment_stack(tmp_path, stacks)
    # The results held (4 x 384 x 1024 x 9 bytes = 14.2 MB) leave a few MB for the
    # bands of the last segment: many passes, and the held results must be counted.
    mem_limit = 24_000_000
    check = "assert len(result) == 4 and all(c.uncertainty is not None for _, c in result)"
    above = peak_above_baseline("combine_segments", mem_limit, list(paths), check)
    assert 0 < above <= mem_limit, f"{above / 1e6:.1f} MB above baseline, limit 24 MB"
