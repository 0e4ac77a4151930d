"""One service per state directory, and the service's own seams: reloads, the fork server,
a catalog it may not write. Issue 11, finding 2 and parts of 12, through the real service."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import assert_one_master_per_set, children_of

from biaswatch.catalog.store import Catalog
from biaswatch.combine.child import RETRY_FIRST_SECONDS
from biaswatch.system.faults import PAUSE_AT, PAUSE_SECONDS
from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import ServiceProcess, as_uid, catalog_rows, running_service

EX_TEMPFAIL = 75  # cli/main.py: another service holds the state directory
EX_CONFIG = 78

# An unprivileged user no account has (not test_limits.py's, which counts its processes),
# keeping only CAP_DAC_READ_SEARCH: it may read and search anything (the interpreter may
# live where only root can read) and write only where the permission bits allow.
UID = 47125
AS_UID = as_uid(UID)


def status_json(config: Path) -> dict[str, object]:
    """What ``biaswatch status --json`` says about the service."""
    result = run_cli("status", "--config", config, "--json", timeout=60)
    report = json.loads(result.stdout)
    assert result.returncode == report["assessment"]["code"], result.stderr  # its Nagios code
    service: dict[str, object] = report["service"]
    return service


def zombies(pid: int) -> list[int]:
    """Children of ``pid`` that have exited and were never waited for (state Z)."""
    found = []
    for child in children_of(pid):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # reaped between listing and reading
            continue
        if state == "Z":
            found.append(child)
    return found


def test_second_run_is_refused_and_the_first_publishes_one_master(tmp_path: Path) -> None:
    """A second run exits 75 at once naming the first's pid, touching nothing; one master."""
    config = write_config(tmp_path, expected_frames=3)
    # The first service's combine is held in flight while the second one starts.
    env = {PAUSE_AT: "mid_combine", PAUSE_SECONDS: "8"}
    with running_service(config, env=env) as first:
        write_frames(config, "cryo", 3, interval=0.0)
        first.wait_event("combine.started", timeout=120)
        # One of the first service's temporaries, as a combine or calibration leaves one
        # while it runs: a start removes leftovers, so a second start would remove it.
        temporary = tmp_path / "masters" / "cryo" / ".in-flight.fits.partial-host-1"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(b"the first service's")
        second = ServiceProcess(config)
        try:
            status = second.proc.wait(timeout=30)
            refused_messages = list(second.messages)
        finally:
            second.close()
        during = status_json(config)
        (published,) = first.wait_event("master.published", timeout=120)
        started = first.events("service.started")
        (refused,) = first.events("service.already_running")
        assert first.stop()[0] == 0
    assert status == EX_TEMPFAIL
    output = (tmp_path / "service-output.txt").read_text()
    assert f"already running (pid {first.proc.pid})" in output
    assert "Traceback" not in output
    assert refused["pid"] == first.proc.pid
    assert "READY=1" not in refused_messages
    assert len(started) == 1, "the second service started"
    assert temporary.read_bytes() == b"the first service's"
    assert (during["running"], during["pid"]) == (True, first.proc.pid)
    assert status_json(config) == {"running": False}
    temporary.unlink()
    assert published["ncombine"] == 3
    assert_one_master_per_set(config, 3)


def test_reloads_keep_the_lock_and_leave_no_zombie(tmp_path: Path) -> None:
    """Three SIGHUPs: same pid holds the lock throughout, no zombie child, still publishes."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        pid = service.proc.pid
        service.wait_event("combine.server_ready", timeout=120)
        refused = []
        for reload in range(1, 4):
            service.proc.send_signal(signal.SIGHUP)
            # A second run started while the service re-executes itself: refused.
            second = ServiceProcess(config)
            try:
                refused.append(second.proc.wait(timeout=30))
            finally:
                second.close()
            wait_until(lambda n=reload: service.messages.count("READY=1") == n + 1, 60, "READY")
            service.wait_event("combine.server_ready", count=reload + 1, timeout=120)
            assert status_json(config)["pid"] == pid
        left = zombies(pid)
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert refused == [EX_TEMPFAIL] * 3
    assert left == []
    assert len(service.events("service.started")) == 4
    assert_one_master_per_set(config, 3)


def test_sighup_while_the_reload_re_executes_is_kept_not_fatal(tmp_path: Path) -> None:
    """A SIGHUP landing while a reload's new program imports: kept, applied, never fatal."""
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config) as service:
        service.proc.send_signal(signal.SIGHUP)
        service.wait_event("service.stopped", timeout=60)
        # The exec follows at once; the new interpreter then imports for a second or more,
        # before it can install a handler: SIGHUP's default action would end it.
        time.sleep(0.2)
        service.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: service.messages.count("READY=1") == 3, 120, "two reloads")
        alive = service.proc.poll() is None
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert alive
    assert len(service.events("service.started")) == 3
    assert_one_master_per_set(config, 3)


def forkserver_of(pid: int) -> int | None:
    """The service's combine fork server, if it has one running."""
    for child in children_of(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in command:
            return child
    return None


def test_fork_server_killed_while_preloading_is_retried_before_ready(tmp_path: Path) -> None:
    """A fork server killed mid-preload: logged, retried after a pause, ready once, published."""
    config = write_config(tmp_path, expected_frames=3)
    # A preload of 10 s (as the numba kernel's compile before issue 14): time to kill it.
    slow = {PAUSE_AT: "preload", PAUSE_SECONDS: "10"}
    with running_service(config, env=slow) as service:
        wait_until(lambda: forkserver_of(service.proc.pid) is not None, 30, "the fork server")
        server = forkserver_of(service.proc.pid)
        assert server is not None
        preloading = not service.events("combine.server_ready")
        os.kill(server, signal.SIGKILL)  # as the OOM killer would, mid-preload
        (failed,) = service.wait_event("combine.server_failed", timeout=60)
        write_frames(config, "cryo", 3, interval=0.0)
        (published,) = service.wait_event("master.published", timeout=240)
        names = [e["event"] for e in service.events() if e["event"].startswith("combine.server")]
        (ready,) = service.events("combine.server_ready")
        assert service.stop()[0] == 0
    assert preloading, "the fork server was ready before the kill: nothing was tested"
    assert names == ["combine.server_failed", "combine.server_ready"]
    waited = dt.datetime.fromisoformat(ready["timestamp"]) - dt.datetime.fromisoformat(
        failed["timestamp"]
    )
    assert waited.total_seconds() >= RETRY_FIRST_SECONDS, "ready without a probe that ran"
    assert (failed["attempt"], failed["retry_in"]) == (1, RETRY_FIRST_SECONDS)
    assert ready["timestamp"] <= published["timestamp"]
    assert_one_master_per_set(config, 3)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run the service as another uid")
@pytest.mark.parametrize("read_only", ["catalog", "state_dir", "state_dir_no_lock_file"])
def test_catalog_it_may_not_write_is_a_logged_config_error(tmp_path: Path, read_only: str) -> None:
    """A catalog or state_dir the service's user may not write: exit 78 with an event, no trace."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    config = write_config(tmp_path)
    state = tmp_path / "state"
    Catalog(state / "catalog.sqlite").close()  # a catalog an earlier run left
    if read_only != "state_dir_no_lock_file":
        (state / "biaswatch.lock").touch()
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(tmp_path)], check=True)
    if read_only == "catalog":
        (state / "catalog.sqlite").chmod(0o444)
    else:
        state.chmod(0o555)
    command = [*AS_UID, sys.executable, "-m", "biaswatch", "run", "--config", str(config)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        state.chmod(0o755)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert "configuration error" in result.stderr
    lines = (tmp_path / "log" / "biaswatch.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    (event,) = [e for e in events if e["event"] == "service.cannot_start"]
    (problem,) = event["problems"]
    assert "give the service's user write access" in problem
    assert event["action"].startswith("fix what is listed")
    assert "service.started" not in [e["event"] for e in events]
    assert catalog_rows(config, "SELECT * FROM frames") == []
