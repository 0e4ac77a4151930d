"""Mount detection: parsing mountinfo, finding a path's mount, and what to do on a network fs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from biaswatch.catalog.open import open_catalog
from biaswatch.catalog.store import utc_now
from biaswatch.errors import ConfigError
from biaswatch.system.mounts import (
    Mount,
    check_state_dir,
    is_network,
    mount_for,
    network_mount,
    parse_mountinfo,
    read_mounts,
    use_polling,
)

# An observatory host as /proc/self/mountinfo shows it (proc(5)): a local root and
# data disk, camera frames over NFSv4, a Windows guider PC's share over CIFS (with
# spaces in both names), an NFS scratch area hidden by a later tmpfs over-mount,
# sshfs, a line with two optional fields, the local nfsd control fs, and junk.
MOUNTINFO = "\n".join(
    [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
        "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
        "30 22 8:17 / /data rw,relatime shared:30 - xfs /dev/sdb1 rw,attr2,inode64,noquota",
        "40 30 0:45 / /data/cameras rw,relatime shared:40 - nfs4 nas:/export/cameras "
        "rw,vers=4.2,rsize=1048576,wsize=1048576,hard,proto=tcp,sec=sys,addr=10.0.0.5",
        r"41 30 0:46 / /data/guider\040cam rw,relatime shared:41 - cifs "
        r"//guider-pc/Guider\040Images rw,vers=3.1.1,cache=strict,username=obs,uid=1000",
        "42 22 0:47 / /mnt/scratch rw,relatime shared:42 - nfs nas:/scratch rw,vers=3,hard",
        "43 22 0:48 / /mnt/scratch rw,relatime shared:43 - tmpfs tmpfs rw,size=1048576k",
        "this line is not a mount",
        "44 22 0:49 / /home/obs/remote rw,nosuid,nodev,relatime shared:44 - fuse.sshfs "
        "obs@camera-pc:/images rw,user_id=1000,group_id=1000",
        "45 22 8:33 / /srv/archive rw,relatime shared:45 master:3 - ext4 /dev/sdc1 rw",
        "46 23 0:50 / /proc/fs/nfsd rw,relatime shared:46 - nfsd nfsd rw",
        "47 22 8:49 / /no-separator rw,relatime shared:47 ext4 /dev/sdd1 rw",
        "48 22 8:50 / /no-source rw,relatime shared:48 - ext4",
        "",
    ]
)

ROOT = Mount(Path("/"), "ext4", "/dev/sda1")
DATA = Mount(Path("/data"), "xfs", "/dev/sdb1")
CAMERAS = Mount(Path("/data/cameras"), "nfs4", "nas:/export/cameras")
GUIDER = Mount(Path("/data/guider cam"), "cifs", "//guider-pc/Guider Images")
SCRATCH_NFS = Mount(Path("/mnt/scratch"), "nfs", "nas:/scratch")
SCRATCH_TMPFS = Mount(Path("/mnt/scratch"), "tmpfs", "tmpfs")
SSHFS = Mount(Path("/home/obs/remote"), "fuse.sshfs", "obs@camera-pc:/images")
ARCHIVE = Mount(Path("/srv/archive"), "ext4", "/dev/sdc1")
NFSD = Mount(Path("/proc/fs/nfsd"), "nfsd", "nfsd")
MOUNTS = parse_mountinfo(MOUNTINFO)


class TestParseMountinfo:
    def test_every_well_formed_line_in_order(self) -> None:
        """Each well-formed line gives its mount point, type and source, in file order."""
        proc = Mount(Path("/proc"), "proc", "proc")
        assert parse_mountinfo(MOUNTINFO) == [
            ROOT,
            proc,
            DATA,
            CAMERAS,
            GUIDER,
            SCRATCH_NFS,
            SCRATCH_TMPFS,
            SSHFS,
            ARCHIVE,
            NFSD,
        ]

    def test_malformed_lines_are_skipped(self) -> None:
        """Lines without the " - " separator, without a source, or that are junk give no mount."""
        points = {m.point for m in MOUNTS}
        assert not points & {Path("/no-separator"), Path("/no-source")}

    @pytest.mark.parametrize(
        ("escaped", "decoded"),
        [
            (r"/data/guider\040cam", "/data/guider cam"),
            (r"/data/tab\011here", "/data/tab\there"),
            (r"/data/new\012line", "/data/new\nline"),
            (r"/data/back\134slash", "/data/back\\slash"),
            (r"/data/\134040", "/data/\\040"),
        ],
    )
    def test_octal_escapes_are_decoded(self, escaped: str, decoded: str) -> None:
        """The kernel's octal escapes for space, tab, newline and backslash are decoded once."""
        line = f"50 22 0:51 / {escaped} rw,relatime - nfs4 nas:/x rw"
        assert parse_mountinfo(line) == [Mount(Path(decoded), "nfs4", "nas:/x")]

    def test_empty_text_has_no_mounts(self) -> None:
        """Empty mountinfo text gives an empty list."""
        assert parse_mountinfo("") == []


class TestMountFor:
    @pytest.mark.parametrize(
        ("path", "mount"),
        [
            ("/data/cameras/cryo/20260704/bias_001.fits", CAMERAS),
            ("/data/cameras", CAMERAS),
            ("/data/camerasX/cryo", DATA),
            ("/data/guider cam/raw", GUIDER),
            ("/data/masters", DATA),
            ("/etc/biaswatch", ROOT),
            ("/", ROOT),
            ("/home/obs/remote/night", SSHFS),
        ],
    )
    def test_deepest_mount_point_at_or_above_the_path(self, path: str, mount: Mount) -> None:
        """The mount is the one with the longest mount point that is the path or a parent of it."""
        assert mount_for(Path(path), MOUNTS) == mount

    def test_later_mount_on_the_same_point_wins(self) -> None:
        """Of two mounts on one point, the later line (the over-mount) holds the path."""
        assert mount_for(Path("/mnt/scratch/a"), MOUNTS) == SCRATCH_TMPFS
        assert mount_for(Path("/mnt/scratch/a"), [SCRATCH_TMPFS, SCRATCH_NFS]) == SCRATCH_NFS

    def test_no_mount_above_the_path(self) -> None:
        """A path under no listed mount point has no mount."""
        assert mount_for(Path("/data/x"), []) is None
        assert mount_for(Path("/srv/x"), [CAMERAS]) is None


class TestIsNetwork:
    @pytest.mark.parametrize(
        "fstype",
        [
            "nfs",
            "nfs4",
            "nfs3",
            "cifs",
            "smb3",
            "smbfs",
            "ceph",
            "glusterfs",
            "lustre",
            "afs",
            "9p",
            "fuse.sshfs",
            "fuse.rclone",
            "fuse.s3fs",
            "fuse.glusterfs",
        ],
    )
    def test_network_types(self, fstype: str) -> None:
        """Network filesystem types, and every type starting with nfs, are network."""
        assert is_network(fstype)

    @pytest.mark.parametrize(
        "fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "fuse", "fuseblk", "fuse.portal"]
    )
    def test_local_types(self, fstype: str) -> None:
        """Local types, plain fuse and local FUSE filesystems are not network."""
        assert not is_network(fstype)


class TestReadMounts:
    def test_reads_and_parses_the_file(self, tmp_path: Path) -> None:
        """read_mounts parses the given file, decoding undecodable bytes as os does for names."""
        source = tmp_path / "mountinfo"
        source.write_bytes(
            MOUNTINFO.encode() + b"51 22 0:52 / /data/caf\xe9 rw - nfs4 nas:/caf\xe9 rw\n"
        )
        cafe = Mount(Path(os.fsdecode(b"/data/caf\xe9")), "nfs4", os.fsdecode(b"nas:/caf\xe9"))
        assert read_mounts(source) == [*MOUNTS, cafe]

    def test_unreadable_file_gives_no_mounts(self, tmp_path: Path) -> None:
        """A missing mountinfo (not Linux) gives an empty list instead of an error."""
        assert read_mounts(tmp_path / "missing") == []

    @pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/mountinfo is Linux's")
    def test_this_host_has_a_root_mount(self) -> None:
        """On Linux the default source lists a mount on /."""
        assert Path("/") in {m.point for m in read_mounts()}


class TestNetworkMount:
    def test_network_mount_of_a_path(self) -> None:
        """A path on nfs4 gets its mount; a path on a local disk gets None."""
        assert network_mount(Path("/data/cameras/cryo/not/there/yet"), MOUNTS) == CAMERAS
        assert network_mount(Path("/data/masters"), MOUNTS) is None

    def test_relative_path_is_taken_from_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A relative path is judged by where it is under the working directory."""
        monkeypatch.chdir(tmp_path)
        share = Mount(tmp_path, "nfs4", "nas:/export")
        assert network_mount(Path("incoming/cryo"), [ROOT, share]) == share


class TestUsePolling:
    @pytest.mark.parametrize(
        ("setting", "directory", "poll"),
        [
            (None, "/data/masters", False),
            (True, "/data/masters", True),
            (True, "/data/cameras/cryo", True),
            (False, "/data/masters", False),
        ],
    )
    def test_quiet_cases(self, setting: bool | None, directory: str, poll: bool) -> None:
        """Local directories follow the setting (unset: native), and true polls silently."""
        assert use_polling(setting, Path(directory), MOUNTS) == (poll, None)

    def test_unset_polls_on_a_network_mount(self) -> None:
        """Unset polling polls a directory on nfs4 and says why."""
        poll, text = use_polling(None, Path("/data/cameras/cryo"), MOUNTS)
        assert poll
        assert text == (
            "/data/cameras/cryo is polled: it is on the nfs4 mount /data/cameras "
            "(nas:/export/cameras), where inotify does not see files written by other machines"
        )

    def test_false_on_a_network_mount_warns(self) -> None:
        """polling = false on a CIFS share stays native, with a warning saying what to set."""
        poll, text = use_polling(False, Path("/data/guider cam/raw"), MOUNTS)
        assert not poll
        assert text == (
            "/data/guider cam/raw is on the cifs mount /data/guider cam (//guider-pc/Guider "
            "Images); inotify does not see files written by other machines; set polling = true "
            "or leave it unset"
        )


class TestCheckStateDir:
    def test_local_state_dir_is_fine(self) -> None:
        """A state directory on a local disk has no problem."""
        assert check_state_dir(Path("/var/lib/biaswatch"), MOUNTS) is None

    def test_network_state_dir_is_a_problem(self) -> None:
        """A state directory on NFS is a problem naming the mount, WAL and the fix."""
        text = check_state_dir(Path("/data/cameras/state"), MOUNTS)
        assert text is not None
        assert text.startswith("state_dir /data/cameras/state is on the nfs4 mount /data/cameras")
        assert "WAL" in text
        assert "put state_dir on a local disk" in text

    def test_no_mount_table_no_problem(self, tmp_path: Path) -> None:
        """Without a mount table (not Linux) nothing is reported."""
        assert check_state_dir(tmp_path, []) is None


def test_service_refuses_a_catalog_on_a_network_filesystem(tmp_path: Path) -> None:
    """The service will not open its SQLite catalog on NFS: a config error, nothing written."""
    state = tmp_path / "state"
    mounts = [Mount(Path("/"), "ext4", "/dev/sda1"), Mount(tmp_path, "nfs4", "nas:/export")]
    with pytest.raises(ConfigError, match=r"state_dir.*nfs4.*local disk"):
        open_catalog(state / "catalog.sqlite", utc_now, mounts)
    assert not state.exists()
