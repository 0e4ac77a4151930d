"""Builds the combine kernel (src/biaswatch/combine/_kernel.c); the rest is in pyproject.toml.

The kernel is compiled when the package is installed, for the interpreter installing it,
with the machine's C compiler and Python's headers only (no numpy headers: it takes
arrays through the buffer protocol). Nothing is compiled or cached at run time.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "src/biaswatch/combine/_kernel.c"

# -O3: GCC's full loop vectoriser (at -O2, GCC 12 vectorises only what its "very
# cheap" cost model allows, which leaves out loops of unknown trip count like the
# kernel's rows), and target_clones in _kernel.c adds AVX2/AVX-512. -ffp-contract=off:
# GCC's default for GNU C (fast) fuses a * b + c into one FMA instruction where the
# target has one, which rounds once instead of twice and changes bits; the kernel must
# give numpy's and ccdproc's results exactly. No -ffast-math for the same reason.
# -fno-math-errno lets sqrt() inline as one instruction; its result is the same
# (correctly rounded either way). -fno-trapping-math: no FP operation traps here (no
# FP exceptions are enabled), so GCC may compute a division or sqrt for every column
# and select, which it vectorises (the UNCERT pass's last loop ran scalar); values are
# the same IEEE results. C11 for <stdatomic.h>; -pthread for the row threads.
KERNEL = Extension(
    "biaswatch.combine._kernel",
    sources=[SOURCE],
    extra_compile_args=[
        *("-std=c11", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"),
        "-pthread",
    ],
    extra_link_args=["-pthread"],  # glibc before 2.34 keeps pthread_create in libpthread
    # The source's hash, built in: kernel.py refuses a kernel built from another
    # _kernel.c than the one beside it (an editable install after a pull, say).
    define_macros=[
        ("KERNEL_SOURCE_SHA256", f'"{hashlib.sha256(Path(SOURCE).read_bytes()).hexdigest()}"')
    ],
)

setup(ext_modules=[KERNEL])
