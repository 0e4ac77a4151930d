"""Which filesystem a path lives on, read from /proc/self/mountinfo.

Two things break quietly on a network filesystem. inotify sees only changes
made through this machine's kernel, so frames a camera PC writes to an NFS or
CIFS share never raise an event (watchdog README, "About using watchdog with
CIFS"; watchdog issues #504 and #409; systemd.path(5) says the same of path
units): such watch directories must be polled. And SQLite's WAL mode "does
not work over a network filesystem" (sqlite.org/wal.html), so the catalog in
``state_dir`` must be on a local disk.

Everything here but :func:`read_mounts` is pure: paths are compared as text,
never stat()ed, because a stat on a stalled NFS mount can hang for minutes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")

# From systemd's fstype_is_network() (src/basic/mountpoint-util.c, with its
# "@network" filesystem set), plus 9p (host shares into VMs) and FUSE clients of
# remote storage. systemd strips any "fuse." prefix; here FUSE types are listed
# whole, since plain "fuse" is often local. glusterfs and ceph mount through FUSE too.
NETWORK_FSTYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre"}
    | {"9p", "davfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.glusterfs", "fuse.ceph-fuse"}
)

# proc(5): space, tab, newline and backslash in mountinfo fields are written as
# three-digit octal escapes (\040, \011, \012, \134).
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    """One mounted filesystem: where it is mounted, its type, and what it mounts."""

    point: Path
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _parse_line(line: str) -> Mount | None:
    """The mount on one mountinfo line, or None if the line is not one."""
    fields = line.split(" ")
    # Six fixed fields, optional tagged ones, then "-", fstype, source, options.
    try:
        separator = fields.index("-", 6)
    except ValueError:
        return None
    if len(fields) < separator + 3 or not fields[4].startswith("/"):
        return None
    fstype, source = fields[separator + 1 : separator + 3]
    return Mount(Path(_unescape(fields[4])), _unescape(fstype), _unescape(source))


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in /proc/self/mountinfo ``text``, in its order; malformed lines are skipped."""
    return [mount for line in text.splitlines() if (mount := _parse_line(line)) is not None]


def mount_for(path: Path, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding absolute ``path``: the deepest mount point at or above it.

    Of mounts on the same point the later one wins, as an over-mount hides the
    one beneath. A mount hidden by a later mount on one of its parents still
    counts: mountinfo order is not always mount order (``mount --move``), and
    taking a hidden network mount for the path only costs polling.
    """
    found: Mount | None = None
    for mount in mounts:
        if path.is_relative_to(mount.point) and (
            found is None or len(mount.point.parts) >= len(found.point.parts)
        ):
            found = mount
    return found


def is_network(fstype: str) -> bool:
    """Whether ``fstype`` (as in mountinfo) is a network filesystem."""
    # nfs* also covers types not listed; "nfsd" (the NFS server's control fs,
    # on /proc/fs/nfsd) is local but never holds a watch directory.
    return fstype in NETWORK_FSTYPES or fstype.startswith("nfs")


def read_mounts(source: Path = MOUNTINFO) -> list[Mount]:
    """This process's mounts; empty where ``source`` cannot be read (not Linux). Never raises."""
    try:
        # Bytes, decoded as os does for file names, so paths compare equal to ours.
        return parse_mountinfo(os.fsdecode(source.read_bytes()))
    except OSError:
        return []


def network_mount(path: Path, mounts: Sequence[Mount] | None = None) -> Mount | None:
    """The network mount holding ``path``, or None; ``mounts`` defaults to read_mounts().

    ``path`` is taken as written: a symlink onto a network mount is judged by
    where the link is, not where it points.
    """
    # absolute(), not resolve(): resolve() stats every component, and could hang.
    mount = mount_for(path.absolute(), read_mounts() if mounts is None else mounts)
    return mount if mount is not None and is_network(mount.fstype) else None


def _mount_described(mount: Mount) -> str:
    return f"the {mount.fstype} mount {mount.point} ({mount.source})"


def use_polling(
    setting: bool | None, directory: Path, mounts: Sequence[Mount]
) -> tuple[bool, str | None]:
    """Whether to poll ``directory`` under the ``polling`` ``setting``, and what to log.

    None polls on a network filesystem only (with a text saying so), True always
    polls and False never does (with a warning text on a network filesystem).
    """
    mount = None if setting is True else network_mount(directory, mounts)
    if mount is None:
        return bool(setting), None
    if setting is None:
        return True, (
            f"{directory} is polled: it is on {_mount_described(mount)}, "
            "where inotify does not see files written by other machines"
        )
    return False, (
        f"{directory} is on {_mount_described(mount)}; inotify does not see files written by "
        "other machines; set polling = true or leave it unset"
    )


def check_state_dir(state_dir: Path, mounts: Sequence[Mount] | None = None) -> str | None:
    """A problem text when ``state_dir`` (the SQLite catalog, WAL mode) is on a network fs."""
    mount = network_mount(state_dir, mounts)
    if mount is None:
        return None
    return (
        f"state_dir {state_dir} is on {_mount_described(mount)}; the catalog is SQLite in WAL "
        "mode, which does not work over a network filesystem: put state_dir on a local disk"
    )


def polls(
    camera: str, setting: bool | None, watch: Sequence[Path], mounts: Sequence[Mount]
) -> bool:
    """Whether a camera polls: if asked to, or if a directory is on a network fs.

    The camera's name, ``polling`` setting and watched directories, not its config:
    system/ stays below config.py (config.py imports system/overlaps.py).
    """
    answers = []
    for directory in watch:
        poll, text = use_polling(setting, directory, mounts)
        mount = network_mount(directory, mounts)
        if text is not None and mount is not None:
            report = log.warning if setting is False else log.info
            report(
                "watch.network_fs",
                camera=camera,
                directory=str(directory),
                fstype=mount.fstype,
                action=text,
            )
        answers.append(poll)
    return any(answers)
