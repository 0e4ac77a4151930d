"""Opening a camera's file: only regular files, only where the camera watches, only if small enough.

A file can lie about what it is. A FIFO named ``x.fits`` blocks ``open()`` until a
writer comes, holding the camera's lane for good; a symlink can bring in a file
from anywhere on the machine; a sparse file of a few KB, or a tile-compressed
one, can announce gigabytes that reading would allocate. So before a byte of
data is read:

1. a symlink is followed only when its target lies inside the camera's watch
   directories (both resolved), or when the camera sets ``follow_symlinks``;
2. the file is opened with O_NONBLOCK (a FIFO cannot block) and O_NOFOLLOW on
   the resolved target (the link cannot be swapped in between), and fstat must
   say "regular file";
3. its headers are walked (fitsbytes.announced) and what they announce is held
   against the camera's ``max_frame_bytes`` and the blocks the file really has.

Each refusal is a :class:`FrameRejected` with the sizes and the setting to change.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from biaswatch.config import FRAME_SHARE, CameraConfig, ServiceConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import Announced, announced
from biaswatch.names import shown

# A file whose allocated blocks hold less than 1/8 of the data it announces has holes
# where data should be (a sparse file): its pixels would read as zeros never written.
# Filesystem compression (ZFS, btrfs) also lowers st_blocks, but a bias is noise in
# its low bits, and lossless compressors get 2-3x on such 16-bit images, not 8x
# (Pence, Seaman & White 2009, PASP 121, 414, table 3).
SPARSE_RATIO = 8
ST_BLOCK = 512  # st_blocks counts 512-byte units on Linux (stat(2))
_MB = 1e6

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
}


def open_frame(path: Path, camera: CameraConfig) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file the camera may read.

    Raises:
        FrameRejected: not a regular file, or a symlink out of the watched trees.
        OSError: it vanished or cannot be read (the caller looks again later).
    """
    target = _target(path, camera)
    _regular(Path(target).stat().st_mode)  # a device is never even opened
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the target became a symlink after it was resolved
            raise FrameRejected("symlink changed while being opened: not read") from None
        raise
    try:
        _regular(os.fstat(fd).st_mode)  # what was opened, not what was looked at
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True, slots=True)
class FileBytes:
    """A camera's file read whole: its bytes and identity, not parsed yet.

    The one step on the camera's disk (a lane's thread); parsing, hashing and
    calibrating them happen on the calibration workers (frames/read.py).
    """

    path: Path
    content: bytes
    size: int
    mtime_ns: int


def read_bytes(path: Path, camera: CameraConfig) -> FileBytes:
    """Read ``path`` once (read-only) if the camera may open it and it is within budget.

    Raises:
        FrameRejected: not a regular file, over budget, or sparse.
        OSError: it vanished or cannot be read.
    """
    with open_frame(path, camera) as f:
        told = check_budget(f, camera)  # before a byte of data is read
        sparse = holes(f, told)
        if sparse is not None:
            raise FrameRejected(sparse)
        st = os.fstat(f.fileno())
        return FileBytes(path, f.read(), st.st_size, st.st_mtime_ns)


def check_budget(f: BinaryIO, camera: CameraConfig) -> Announced:
    """What the file's headers announce, refused if over the camera's budget.

    Reads headers only, then rewinds. Raises FrameRejected naming sizes and setting.
    """
    told = announced(f)
    f.seek(0)
    # Unset only in a CameraConfig made without load_config (which derives it).
    budget = camera.max_frame_bytes or ServiceConfig().mem_limit // FRAME_SHARE
    if told.in_memory > budget:
        raise FrameRejected(
            f"its headers announce {told.in_memory} bytes of data "
            f"({told.in_memory / _MB:.0f} MB), more than max_frame_bytes = {budget} "
            f"({budget / _MB:.0f} MB): not read; raise the camera's max_frame_bytes "
            "(or [service] mem_limit) if such frames are real"
        )
    return told


def holes(f: BinaryIO, told: Announced) -> str | None:
    """Why the file looks sparse (data announced but not on disk), or None.

    A writer that sets the size first and fills it in later looks the same while it
    writes, so the service treats this like an incomplete file: it waits, then rejects.
    """
    st = os.fstat(f.fileno())
    allocated = st.st_blocks * ST_BLOCK
    expected = min(told.stored, st.st_size)
    # st_blocks 0 with data: a filesystem that does not report blocks (some FUSE
    # mounts); a file with no block at all has no header either and is not FITS.
    if st.st_blocks and allocated * SPARSE_RATIO < expected:
        return (
            f"sparse file: {allocated} bytes stored on disk for {expected} bytes of "
            "FITS data announced; its data were never written"
        )
    return None


def _target(path: Path, camera: CameraConfig) -> str:
    """The file to open: ``path``, or a symlink's resolved target if the camera may read it."""
    if not stat.S_ISLNK(os.lstat(path).st_mode):
        return str(path)
    real = os.path.realpath(path)
    if camera.follow_symlinks or any(_within(real, root) for root in camera.watch):
        return real
    raise FrameRejected(
        f"symlink to {shown(real)}, outside the camera's watch directories: not read "
        "(set follow_symlinks = true for this camera to read such links)"
    )


def _within(real: str, root: Path) -> bool:
    return Path(real).is_relative_to(os.path.realpath(root))


def _regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise FrameRejected(f"{kind}, not a regular file: never opened as a frame")
