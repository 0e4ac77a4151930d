"""Fault injection on the real service: crashes, lost events, changed and duplicate files,
failing combines, reloads. Every frame is accounted for and every set has one master."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.system.faults import CRASH_AT, PAUSE_AT, PAUSE_SECONDS, POINTS
from biaswatch.testing.helpers import wait_until, write_config, write_frames
from biaswatch.testing.service import ServiceProcess, catalog_rows, running_service


def masters_on_disk(base: Path) -> list[Path]:
    """Every file under the masters directory, temporaries included; no link, preview or index."""
    files = (base / "masters").rglob("*")
    return sorted(
        p
        for p in files
        if p.is_file() and not p.is_symlink() and p.suffix != ".png" and p.name != "index.json"
    )


def assert_one_master_per_set(config: Path, ncombine: int) -> Path:
    """Exactly one master on disk and in the catalog, done, its frames combined, linked."""
    base = config.parent
    files = masters_on_disk(base)
    assert len(files) == 1, files
    assert not [p for p in files if ".partial-" in p.name]
    (master,) = catalog_rows(config, "SELECT * FROM masters")
    assert Path(master["path"]) == files[0]
    assert [r["state"] for r in catalog_rows(config, "SELECT state FROM sets")] == ["done"]
    statuses = catalog_rows(config, "SELECT status FROM frames")
    assert [r["status"] for r in statuses] == ["combined"] * ncombine
    assert fits.getheader(files[0])["NCOMBINE"] == ncombine
    link = base / "masters" / "cryo" / "latest.fits"
    assert link.resolve() == files[0].resolve()
    return files[0]


def wait_until_dead(service: ServiceProcess, timeout: float = 120) -> int:
    """The service process's exit status once it has died on its own."""
    wait_until(lambda: service.proc.poll() is not None, timeout, "the service to die")
    return int(service.proc.returncode)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_while_publishing_leaves_one_master(tmp_path: Path, point: str) -> None:
    """SIGKILL at each step of publishing, then a restart: one master, nothing partial."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config, env={CRASH_AT: point}) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        assert wait_until_dead(service) == -signal.SIGKILL
    with running_service(config) as service:
        wait_until(
            lambda: (
                [r["state"] for r in catalog_rows(config, "SELECT state FROM sets")] == ["done"]
            ),
            120,
            "the set to be done after the restart",
        )
        adopted = service.events("master.adopted")
        repaired = service.events("master.latest_repaired")
        assert service.stop()[0] == 0
    assert_one_master_per_set(config, 3)
    # after_rename: the file had its name but no catalog row, so it was adopted, not
    # written again; after_commit: recorded, only the latest link was missing.
    assert bool(adopted) == (point == "after_rename")
    assert bool(repaired) == (point in ("after_rename", "after_commit"))


def test_events_lost_are_made_up_by_the_rescan(tmp_path: Path) -> None:
    """With no watch events at all, the periodic rescan still finds every frame."""
    # A polling observer that would look again only after an hour: no events.
    config = write_config(
        tmp_path,
        service={"rescan_minutes": 0.05},
        expected_frames=3,
        polling=True,
        poll_interval_seconds=3600,
    )
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("master.published", timeout=120)
        reconciled = [e for e in service.events("scan.reconciled") if e["missing"] > 0]
        assert service.stop()[0] == 0
    assert reconciled and reconciled[0]["level"] == "warning"
    assert_one_master_per_set(config, 3)


def test_changed_input_makes_a_new_master_version(tmp_path: Path) -> None:
    """Rewriting a combined frame with new pixels gives master 2; master 1 stays as it was."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        raws = write_frames(config, "cryo", 3, interval=0.0)
        (first,) = service.wait_event("master.published", timeout=120)
        before = hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest()
        # The camera software rewrites the first frame (a re-download, say).
        other = write_frames(config, "cryo", 1, seed=99, out_dir=tmp_path / "elsewhere")[0]
        tmp = raws[0].with_name(".rewrite.tmp")
        shutil.copyfile(other, tmp)
        os.replace(tmp, raws[0])
        published = service.wait_event("master.published", count=2, timeout=120)
        changed = service.events("frame.changed")
        assert service.stop()[0] == 0
    assert changed and changed[0]["file"] == str(raws[0])
    second = published[1]
    assert (second["sequence"], second["ncombine"]) == (2, 3)
    assert hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest() == before
    digests = [fits.getheader(e["path"])["BWDIGEST"] for e in published]
    assert digests[0] != digests[1]
    assert len(catalog_rows(config, "SELECT * FROM masters")) == 2


def test_duplicate_file_is_not_combined_twice(tmp_path: Path) -> None:
    """The same content under a second name is recorded as a duplicate and left out."""
    config = write_config(tmp_path, expected_frames=3, min_frames=1, quiet_minutes=0.05)
    with running_service(config) as service:
        raws = write_frames(config, "cryo", 2, interval=0.0)
        service.wait_event("frame.calibrated", count=2)
        twin = raws[0].with_name("copy_of_first.fits")
        shutil.copyfile(raws[0], twin)
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert published["ncombine"] == 2
    (row,) = catalog_rows(config, "SELECT * FROM frames WHERE path = ?", str(twin))
    assert row["status"] == "ignored"
    assert row["reason"].startswith(f"duplicate of {raws[0]}")


def test_failed_combine_is_retried_and_then_succeeds(tmp_path: Path) -> None:
    """A combine that cannot write is retried with back-off and publishes once mended."""
    config = write_config(tmp_path, service={"combine_retry_seconds": 1}, expected_frames=3)
    blocker = tmp_path / "masters" / "cryo"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the camera's masters directory should be")
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        (retrying,) = service.wait_event("combine.retrying", timeout=120)
        blocker.unlink()
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert retrying["tries"] == 1 and retrying["reason"]
    assert retrying["action"].endswith("move it")
    assert published["ncombine"] == 3
    assert_one_master_per_set(config, 3)


def test_combine_failing_every_try_ends_failed_and_the_service_goes_on(tmp_path: Path) -> None:
    """After three failed tries the set is failed with its reason; other cameras still work."""
    config = write_config(tmp_path, service={"combine_retry_seconds": 0.2}, expected_frames=3)
    (tmp_path / "masters").mkdir()
    (tmp_path / "masters" / "cryo").write_text("not a directory")
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        (failed,) = service.wait_event("set.failed", timeout=120)
        write_frames(config, "te", 5, interval=0.0)
        service.wait_event("master.published", timeout=120)
        alive = service.proc.poll() is None
        assert service.stop()[0] == 0
    assert alive
    assert failed["tries"] == 3 and failed["camera"] == "cryo"
    (row,) = catalog_rows(config, "SELECT * FROM sets WHERE camera = 'cryo'")
    assert (row["state"], row["tries"]) == ("failed", 3)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, from /proc/PID/stat (its 4th field)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone between listing and reading
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def combine_children(service_pid: int) -> list[int]:
    """Combine children: forked by the fork server, itself a child of the service."""
    return [child for server in children_of(service_pid) for child in children_of(server)]


def test_combine_child_killed_as_by_the_oom_killer_is_retried_and_published_once(
    tmp_path: Path,
) -> None:
    """A combine child SIGKILLed mid-combine, as the OOM killer does: retried, one master."""
    config = write_config(tmp_path, service={"combine_retry_seconds": 1}, expected_frames=3)
    # Every try holds 5 s between combining and writing: the kill lands in the first.
    env = {PAUSE_AT: "mid_combine", PAUSE_SECONDS: "5"}
    with running_service(config, env=env) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("combine.started", timeout=120)
        wait_until(lambda: len(combine_children(service.proc.pid)) == 1, 30, "a combine child")
        (child,) = combine_children(service.proc.pid)
        os.kill(child, signal.SIGKILL)
        (retrying,) = service.wait_event("combine.retrying", timeout=120)
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert retrying["tries"] == 1
    assert "killed by SIGKILL" in retrying["reason"]
    assert published["ncombine"] == 3
    assert len(service.events("combine.started")) == 2
    assert_one_master_per_set(config, 3)


def test_sighup_keeps_a_bad_config_and_applies_a_good_one(tmp_path: Path) -> None:
    """SIGHUP with a broken config changes nothing; with a valid one the same PID restarts."""
    config = write_config(tmp_path, expected_frames=5)
    good = config.read_text()
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("frame.calibrated", count=3)
        config.write_text(good.replace("expected_frames = 5", "expected_frames = oops"))
        service.proc.send_signal(signal.SIGHUP)
        (failed,) = service.wait_event("config.reload_failed")
        assert service.proc.poll() is None and not service.events("master.published")
        config.write_text(good.replace("expected_frames = 5", "expected_frames = 3"))
        service.proc.send_signal(signal.SIGHUP)
        (published,) = service.wait_event("master.published", timeout=120)
        started = service.events("service.started")
        messages = list(service.messages)
        assert service.stop()[0] == 0
    assert failed["problems"]
    assert published["ncombine"] == 3
    assert len(started) == 2
    # RELOADING=1 (with MONOTONIC_USEC=, sd_notify(3)) at each SIGHUP; READY=1 alone at
    # each start, and with STATUS=reload failed after the refused one.
    reloading = [m for m in messages if m.startswith("RELOADING=1\nMONOTONIC_USEC=")]
    assert len(reloading) == 2 and messages.count("READY=1") == 2
    assert sum(m.startswith("READY=1\nSTATUS=reload failed: ") for m in messages) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs setpriv as root")
def test_read_only_masters_directory_is_retried_with_what_to_do(tmp_path: Path) -> None:
    """A masters directory the service may not write to: retried, told, published once mended."""
    config = write_config(tmp_path, service={"combine_retry_seconds": 1}, expected_frames=3)
    night_dirs = tmp_path / "masters" / "cryo"
    night_dirs.mkdir(parents=True)
    night_dirs.chmod(0o555)
    # As root, drop the capabilities that bypass permission bits (see test_service.py).
    no_bypass = (
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        "--inh-caps=-dac_override,-dac_read_search",
    )
    try:
        with running_service(config, prefix=no_bypass) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            (retrying,) = service.wait_event("combine.retrying", timeout=120)
            night_dirs.chmod(0o755)
            service.wait_event("master.published", timeout=120)
            assert service.stop()[0] == 0
    finally:
        night_dirs.chmod(0o755)
    assert "Errno 13" in retrying["reason"]
    assert retrying["action"] == "give the service's user write access to masters_dir"
    assert_one_master_per_set(config, 3)


def _mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``where``; False where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def test_full_masters_disk_is_retried_and_published_once_space_is_freed(tmp_path: Path) -> None:
    """ENOSPC on the masters file system: no partial file, retried, published once it grows."""
    masters = tmp_path / "masters"
    if not _mount_tmpfs(masters, "8k"):  # 8 kB: smaller than one master (about 17 kB)
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN")
    try:
        config = write_config(tmp_path, service={"combine_retry_seconds": 1}, expected_frames=3)
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            (retrying,) = service.wait_event("combine.retrying", timeout=120)
            partial = [p for p in masters.rglob("*") if ".partial-" in p.name]
            remount = ["mount", "-o", "remount,size=4m", str(masters)]
            subprocess.run(remount, check=True)
            service.wait_event("master.published", timeout=120)
            assert service.stop()[0] == 0
        assert "Errno 28" in retrying["reason"]
        assert retrying["action"] == "free space on the masters directory's file system"
        assert partial == [], "a failed write left its temporary file"
        assert_one_master_per_set(config, 3)
    finally:
        subprocess.run(["umount", "-l", str(masters)], check=False)


def test_corrupt_catalog_is_set_aside_and_rebuilt_without_remaking_masters(
    tmp_path: Path,
) -> None:
    """A catalog SQLite cannot read is moved aside; the rebuild adopts the master on disk."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    master = Path(published["path"])
    before = hashlib.sha256(master.read_bytes()).hexdigest()
    catalog = tmp_path / "state" / "catalog.sqlite"
    catalog.write_bytes(b"a disk error wrote this over the catalog" * 100)
    with running_service(config) as service:
        (corrupt,) = service.wait_event("catalog.corrupt")
        (adopted,) = service.wait_event("master.adopted", timeout=120)
        assert service.stop()[0] == 0
    assert Path(corrupt["moved_to"]).read_bytes().startswith(b"a disk error")
    assert adopted["path"] == str(master)
    assert hashlib.sha256(master.read_bytes()).hexdigest() == before
    assert_one_master_per_set(config, 3)


def test_watch_directory_deleted_and_recreated_is_watched_again(tmp_path: Path) -> None:
    """A camera directory removed and made again is re-armed, and its new frames combine."""
    config = write_config(tmp_path, expected_frames=3)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        shutil.rmtree(incoming)
        (lost,) = service.wait_event("watch.directory_lost")
        incoming.mkdir()
        service.wait_event("watch.directory_armed", timeout=60)  # looked for every 30 s
        write_frames(config, "cryo", 3, interval=0.0)
        (published,) = service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert lost["directory"] == str(incoming)
    assert published["ncombine"] == 3
