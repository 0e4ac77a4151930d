"""A combine's peak memory, measured in a child process of its own (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

MEMORY_CHILD = """
import sys
from pathlib import Path
import numpy as np
from biaswatch.combine.engine import combine_files, warm_up
from biaswatch.settings import CombineSettings

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

paths, limit = [Path(p) for p in sys.argv[2:]], int(sys.argv[1])
warm_up()
combine_files(paths[:2], CombineSettings(), 10**9)  # threads started, code loaded
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS, proc(5)
before = vm("VmRSS")
combine_files(paths, CombineSettings(), limit)
print(vm("VmHWM") - before)
"""


@pytest.mark.parametrize("n_frames", [5, 10, 50])
def test_peak_memory_above_baseline_within_mem_limit(tmp_path: Path, n_frames: int) -> None:
    """A combine's peak RSS above the process's RSS before it stays within mem_limit."""
    rng = np.random.default_rng(n_frames)
    paths = []
    for i in range(n_frames):
        path = tmp_path / f"cal{i}.fits"
        fits.PrimaryHDU(rng.normal(0, 8, (384, 2048)).astype(np.float32)).writeto(path)
        paths.append(str(path))
    mem_limit = 24_000_000  # many bands: 384 x 2048 x n_frames float32 is 16-157 MB
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(mem_limit), *paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    above = int(result.stdout.strip())
    assert 0 < above <= mem_limit, f"{above / 1e6:.1f} MB above baseline, limit 24 MB"
