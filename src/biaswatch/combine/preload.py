"""Imported once by the combine fork server, so that every forked combine starts ready.

The server imports numpy, astropy and the engine and compiles the kernel (or loads
it from NUMBA_CACHE_DIR) without running it, so it starts no threads: forking a
process that runs numba's workqueue threads is not safe. Each combine is then a
fresh fork of this server: a new process per set, with no import or compile time.
"""

import contextlib

# The child's target lives in biaswatch.combine.child, with astropy and the code that
# writes the master: imported here once, not in every child.
import biaswatch.combine.child  # noqa: F401
from biaswatch.combine.engine import warm_up

# The server must start even if compiling fails here: the combine then compiles
# again in the child, where a failure becomes the set's recorded reason.
with contextlib.suppress(Exception):
    warm_up()
