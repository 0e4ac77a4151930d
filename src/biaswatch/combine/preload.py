"""Imported once by the combine fork server, so that every forked combine starts ready.

The server imports numpy, astropy and the engine, and runs the compiled kernel once on
a tiny band (engine.warm_up: the kernel is built at install time, so nothing compiles
here). The kernel's threads end before it returns, so the server runs none when it
forks. Each combine is then a fresh fork of this server: a new process per set, with
no import time.
"""

import contextlib

# The child's target lives in biaswatch.combine.child, with astropy and the code that
# writes the master: imported here once, not in every child.
import biaswatch.combine.child  # noqa: F401
from biaswatch.combine.engine import warm_up
from biaswatch.system.faults import pause_point

pause_point("preload")  # tests hold the server here, as a slow first start would

# The server must start even if the warm-up fails here: the combine then runs the
# kernel again in the child, where a failure becomes the set's recorded reason.
with contextlib.suppress(Exception):
    warm_up()
