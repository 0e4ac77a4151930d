"""A read-only FUSE mirror of a directory that can be made to hang, like a dead NFS server.

    python stallfs.py BACKING MOUNTPOINT CONTROL

While the file CONTROL exists, every filesystem call under MOUNTPOINT blocks
in the kernel (the caller sits in D state, as on a hard NFS mount whose server
is gone; nfs(5) "hard"); when CONTROL is removed they all complete. Files are
written into BACKING directly, as a camera computer writes to the NFS server.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from mfusepy import FUSE, FuseOSError, Operations

_STAT_KEYS = ("st_atime", "st_ctime", "st_mtime", "st_gid", "st_uid", "st_mode", "st_nlink")


class StallFS(Operations):  # type: ignore[misc]
    """Passes reads through to ``backing``; hangs while ``control`` exists."""

    use_ns = True

    def __init__(self, backing: Path, control: Path) -> None:
        self._backing = backing
        self._control = control

    def _hang_while_stalled(self) -> None:
        while self._control.exists():
            time.sleep(0.05)

    def _real(self, path: str) -> Path:
        return self._backing / path.lstrip("/")

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._hang_while_stalled()
        try:
            st = os.lstat(self._real(path))
        except OSError as exc:
            raise FuseOSError(exc.errno) from None
        attrs = {key: getattr(st, key) for key in _STAT_KEYS}
        attrs.update(st_size=st.st_size, st_atime=st.st_atime_ns, st_ctime=st.st_ctime_ns)
        attrs["st_mtime"] = st.st_mtime_ns
        return attrs

    def access(self, path: str, amode: int) -> int:
        self._hang_while_stalled()
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        self._hang_while_stalled()
        return [".", "..", *(entry.name for entry in self._real(path).iterdir())]

    def open(self, path: str, flags: int) -> int:
        self._hang_while_stalled()
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._hang_while_stalled()
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0


if __name__ == "__main__":
    backing, mountpoint, control = (Path(a).absolute() for a in sys.argv[1:4])
    # No kernel caching of names and attributes (libfuse caches both for 1 s by
    # default): a lookup made just after hang() must reach this daemon and hang, as
    # every call on a dead NFS server does. The service now starts in well under a
    # second (issue 12), within a cached lookup of the mount's root.
    FUSE(
        StallFS(backing, control),
        str(mountpoint),
        foreground=True,
        ro=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
