"""The runtime directory's files (system/runtime.py), the state directory's lock under its new
name (system/pidfile.py) and the reload's check and answers (service/reload.py), in process."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from biaswatch.config import load_config
from biaswatch.service.reload import HANDED_DOWN, Reloads
from biaswatch.system import notify, pidfile, runtime
from biaswatch.testing.fits import FakeNotifier
from biaswatch.testing.helpers import write_config

NOW = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _no_handed_down_reload(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's BIASWATCH_RELOAD_ANSWER or a systemd RUNTIME_DIRECTORY."""
    monkeypatch.delenv(HANDED_DOWN, raising=False)
    monkeypatch.delenv(runtime.ENVIRONMENT_VARIABLE, raising=False)
    yield


def test_runtime_directory_is_systemds_else_the_state_directorys_run(tmp_path: Path) -> None:
    """$RUNTIME_DIRECTORY (its first entry) wins; outside systemd it is <state_dir>/run."""
    state = tmp_path / "state"

    assert runtime.runtime_dir(state, {}) == state / "run"
    assert runtime.runtime_dir(state, {"RUNTIME_DIRECTORY": ""}) == state / "run"
    assert runtime.runtime_dir(state, {"RUNTIME_DIRECTORY": "/run/biaswatch"}) == Path(
        "/run/biaswatch"
    )
    both = {"RUNTIME_DIRECTORY": "/run/biaswatch:/run/other"}
    assert runtime.runtime_dir(state, both) == Path("/run/biaswatch")


def test_pidfile_is_written_then_removed(tmp_path: Path) -> None:
    """The pidfile holds the pid and a newline; removing it twice is harmless."""
    directory = tmp_path / "run"
    runtime.prepare(directory)

    path = runtime.write_pidfile(directory, 4242)

    assert path == directory / "biaswatch.pid"
    assert path.read_text() == "4242\n"
    assert directory.stat().st_mode & 0o777 == 0o750 & ~_umask()
    runtime.remove_pidfile(directory)
    runtime.remove_pidfile(directory)
    assert not path.exists()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_requests_are_taken_once_and_answered_by_nonce(tmp_path: Path) -> None:
    """Each request is taken once; its answer is read once and names its outcome and problems."""
    directory = tmp_path / "run"
    runtime.prepare(directory)
    first, second = runtime.new_request(directory), runtime.new_request(directory)
    (directory / ".reload-request.abc.1.tmp").write_text("half written")
    (directory / "reload-request.not-hex!").write_text("not ours")

    taken = runtime.take_requests(directory)

    assert sorted(taken) == sorted([first, second])
    assert runtime.take_requests(directory) == []
    assert runtime.read_outcome(directory, first) is None
    runtime.answer(directory, runtime.ReloadOutcome(first, "refused", 7, "c.toml", ["bad"]))
    answer = runtime.read_outcome(directory, first)
    assert answer == runtime.ReloadOutcome(first, "refused", 7, "c.toml", ["bad"])
    assert runtime.read_outcome(directory, first) is None  # removed once read
    assert runtime.read_outcome(directory, second) is None


def test_withdrawn_request_is_not_taken(tmp_path: Path) -> None:
    """A request withdrawn before the service looks is not taken; no directory, no request."""
    directory = tmp_path / "run"
    runtime.prepare(directory)
    nonce = runtime.new_request(directory)

    runtime.withdraw_request(directory, nonce)

    assert runtime.take_requests(directory) == []
    assert runtime.take_requests(tmp_path / "missing") == []


def test_reloading_message_carries_the_monotonic_clock() -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= (CLOCK_MONOTONIC in us) and STATUS=, one datagram."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = notify.reloading_message("reloading x.toml").split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    assert lines[0] == "RELOADING=1"
    name, _, usec = lines[1].partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    assert lines[2:] == ["STATUS=reloading x.toml"]


def test_a_refused_config_is_answered_and_systemd_told_ready(tmp_path: Path) -> None:
    """A config that no longer loads: False, RELOADING=1 then READY=1 with the reason, refused."""
    config_path = write_config(tmp_path)
    config = load_config(config_path)
    notifier = FakeNotifier()
    reloads = Reloads(config, notifier)
    directory = runtime.runtime_dir(config.service.state_dir)
    runtime.prepare(directory)
    nonce = runtime.new_request(directory)
    config_path.write_text(
        config_path.read_text().replace("expected_frames = 5", "expected_frames = 0")
    )

    assert reloads.check() is False

    assert notifier.messages[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert notifier.messages[1].startswith("READY=1\nSTATUS=reload failed: ")
    assert "expected_frames" in notifier.messages[1]
    answer = runtime.read_outcome(directory, nonce)
    assert answer is not None and answer.outcome == "refused"
    assert answer.pid == os.getpid()
    assert any("expected_frames" in problem for problem in answer.problems)
    assert HANDED_DOWN not in os.environ


def test_a_good_config_is_handed_down_and_answered_by_the_next_program(tmp_path: Path) -> None:
    """A config that loads: True, no answer yet; the re-executed program answers "reloaded"."""
    config = load_config(write_config(tmp_path))
    notifier = FakeNotifier()
    directory = runtime.runtime_dir(config.service.state_dir)
    runtime.prepare(directory)
    nonce = runtime.new_request(directory)

    reloads = Reloads(config, notifier)
    assert reloads.check() is True
    late = runtime.new_request(directory)  # its SIGHUP came while the service stopped
    reloads.hand_down()
    assert runtime.read_outcome(directory, nonce) is None
    handed = {"dir": str(directory), "nonces": [nonce, late]}
    assert json.loads(os.environ[HANDED_DOWN]) == handed
    assert [m.split("\n")[0] for m in notifier.messages] == ["RELOADING=1"]

    after_exec = Reloads(config, FakeNotifier())  # as the new program builds it
    assert HANDED_DOWN not in os.environ
    after_exec.answer_handed_down()
    after_exec.answer_handed_down()  # answered once only
    for each in (nonce, late):
        answer = runtime.read_outcome(directory, each)
        assert answer is not None and answer.outcome == "reloaded" and answer.problems == []


def test_plain_sighup_needs_no_request(tmp_path: Path) -> None:
    """kill -HUP with no request file: the reload is checked, nothing is answered or written."""
    config = load_config(write_config(tmp_path))
    directory = runtime.runtime_dir(config.service.state_dir)

    reloads = Reloads(config, FakeNotifier())
    assert reloads.check() is True
    reloads.hand_down()

    assert json.loads(os.environ[HANDED_DOWN])["nonces"] == []
    Reloads(config, FakeNotifier()).answer_handed_down()
    assert not directory.exists() or list(directory.iterdir()) == []


def test_lock_is_biaswatch_lock_and_records_the_runtime_directory(tmp_path: Path) -> None:
    """The lock file is state/biaswatch.lock; its holder's pid and runtime directory are read."""
    state = tmp_path / "state"
    lock = pidfile.take(state, NOW, tmp_path / "run dir")
    try:
        holder = pidfile.running(state)
    finally:
        lock.release()

    assert pidfile.path_for(state) == state / "biaswatch.lock"
    assert holder == pidfile.LockHolder(
        os.getpid(), "2026-12-05T02:00:00+00:00", tmp_path / "run dir"
    )
    assert pidfile.running(state) is None


def test_start_is_refused_while_an_older_version_holds_the_legacy_lock(tmp_path: Path) -> None:
    """A biaswatch.pid locked by a pre-issue-16 service: start refused, running() names it."""
    state = tmp_path / "state"
    state.mkdir()
    legacy = state / "biaswatch.pid"
    legacy.write_text("4242 2026-12-01T00:00:00+00:00\n")
    fd = os.open(legacy, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: another holder
    try:
        with pytest.raises(pidfile.AlreadyRunning) as refused:
            pidfile.take(state, NOW)
        holder = pidfile.running(state)
    finally:
        os.close(fd)

    assert refused.value.path == legacy and refused.value.pid == 4242
    assert holder is not None and holder.pid == 4242
    assert pidfile.running(state) is None
    pidfile.take(state, NOW).release()  # free once the old one is gone


def test_stale_legacy_and_new_files_naming_pid_1_are_not_a_running_service(tmp_path: Path) -> None:
    """Lock, legacy lock and pidfile all naming pid 1, no holder: running() says nobody."""
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True)
    for name in ("biaswatch.lock", "biaswatch.pid", "run/biaswatch.pid"):
        (state / name).write_text("1 2026-12-01T00:00:00+00:00\n")

    assert pidfile.running(state) is None


def test_reload_reads_the_state_directory_as_load_config_resolves_it(tmp_path: Path) -> None:
    """biaswatch reload's state directory, from the TOML alone, is load_config's, loads or not."""
    from biaswatch.cli.reload import _state_dir
    from biaswatch.errors import ConfigError

    config = tmp_path / "config.toml"
    config.write_text('[service]\nstate_dir = "state"\n[cameras.cryo]\nwatch = ["in"]\n')
    assert _state_dir(config) == load_config(config).service.state_dir == tmp_path / "state"
    config.write_text('[service]\nstate_dir = "state"\n[cameras.cryo]\nexpected_frames = -1\n')
    with pytest.raises(ConfigError):
        load_config(config)
    assert _state_dir(config) == tmp_path / "state"  # the service refuses it, and says so
    config.write_text("not = [toml\n")
    problem = _state_dir(config)
    assert isinstance(problem, ConfigError) and "not valid TOML" in problem.problems[0]
