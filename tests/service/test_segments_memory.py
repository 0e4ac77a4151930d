"""An MEF combine's peak memory (every segment, MASK and UNCERT), in a child process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from biaswatch.testing.fits import write_segment_stack

MEMORY_CHILD = """
import sys
from pathlib import Path
from biaswatch.combine.engine import warm_up
from biaswatch.combine.segments import combine_segments
from biaswatch.settings import CombineSettings

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

paths, limit = [Path(p) for p in sys.argv[2:]], int(sys.argv[1])
warm_up()
combine_segments(paths[:2], CombineSettings(), 10**9)  # threads started, code loaded
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS, proc(5)
before = vm("VmRSS")
segments = combine_segments(paths, CombineSettings(), limit)
assert len(segments) == 4 and all(c.uncertainty is not None for _, c in segments)
print(vm("VmHWM") - before)
"""


def test_mef_peak_memory_with_planes_within_mem_limit(tmp_path: Path) -> None:
    """Four segments combined with MASK and UNCERT stay within mem_limit above the baseline."""
    rng = np.random.default_rng(4)
    stacks = {f"AMP{i}": rng.normal(0, 8, (10, 384, 1024)).astype(np.float32) for i in range(1, 5)}
    paths = write_segment_stack(tmp_path, stacks)
    # The results held (4 x 384 x 1024 x 9 bytes = 14.2 MB) leave a few MB for the
    # bands of the last segment: many passes, and the held results must be counted.
    mem_limit = 24_000_000
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(mem_limit), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    above = int(result.stdout.strip())
    assert 0 < above <= mem_limit, f"{above / 1e6:.1f} MB above baseline, limit 24 MB"
