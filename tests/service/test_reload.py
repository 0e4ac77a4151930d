"""``biaswatch reload`` against the real service: ``systemctl reload`` semantics, read off the
notify socket the harness binds as systemd would (RELOADING=1 + MONOTONIC_USEC, READY=1),
and the command's exit status (0 reloaded, 78 refused, 69 no answer)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from biaswatch.testing.helpers import run_cli, wait_until, write_config
from biaswatch.testing.service import running_service

EX_CONFIG = 78


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock of MONOTONIC_USEC= (sd_notify(3))."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading_at(messages: list[str]) -> tuple[int, int]:
    """The index of the one RELOADING=1 datagram and its MONOTONIC_USEC value."""
    found = [(i, m) for i, m in enumerate(messages) if m.startswith("RELOADING=1\n")]
    assert len(found) == 1, messages
    index, message = found[0]
    fields = dict(line.partition("=")[::2] for line in message.split("\n"))
    return index, int(fields["MONOTONIC_USEC"])


def test_reload_of_a_good_config_exits_0_once_the_new_one_runs(tmp_path: Path) -> None:
    """A camera added, then reload: exit 0, RELOADING=1 then READY=1, the camera watched."""
    config = write_config(tmp_path)
    with running_service(config) as service:
        (tmp_path / "incoming" / "spare").mkdir(parents=True)
        config.write_text(config.read_text() + '[cameras.spare]\nwatch = ["incoming/spare"]\n')
        before = monotonic_usec()
        result = run_cli("reload", "--config", config, "--json", timeout=120)
        after = monotonic_usec()
        messages = list(service.messages)
        started = service.events("service.started")
        pid = service.proc.pid
        pidfile = tmp_path / "state" / "run" / "biaswatch.pid"
        left = sorted(p.name for p in pidfile.parent.iterdir())
        pid_written = pidfile.read_text()
        assert service.stop()[0] == 0
        gone = not pidfile.exists()

    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)["reloaded"]
    assert answer["pid"] == pid and answer["config"] == str(config)
    assert [event["cameras"] for event in started] == [["cryo", "te"], ["cryo", "spare", "te"]]
    index, usec = reloading_at(messages)
    assert before <= usec <= after
    assert "READY=1" in messages[index + 1 :]
    assert left == ["biaswatch.pid"]  # the request taken, the answer read
    assert pid_written == f"{pid}\n"
    assert gone  # removed at the clean stop


def test_reload_of_a_broken_config_exits_78_and_the_old_one_keeps_running(tmp_path: Path) -> None:
    """An invalid value, then reload: exit 78 naming it, READY=1 + STATUS=reload failed, alive."""
    config = write_config(tmp_path)
    with running_service(config) as service:
        good = config.read_text()
        config.write_text(good.replace("expected_frames = 5", "expected_frames = 0"))
        result = run_cli("reload", "--config", config, timeout=120)
        alive = service.proc.poll() is None
        messages = list(service.messages)
        failed = service.events("config.reload_failed")
        started = service.events("service.started")
        # The old config still runs, and a later good reload still works.
        config.write_text(good)
        again = run_cli("reload", "--config", config, timeout=120)
        assert service.stop()[0] == 0

    assert result.returncode == EX_CONFIG, result.stderr
    assert "refused" in result.stderr and "expected_frames" in result.stderr
    assert alive and len(failed) == 1 and len(started) == 1
    index, _ = reloading_at(messages)
    answer = messages[index + 1]
    assert answer.startswith("READY=1\nSTATUS=reload failed: ") and "expected_frames" in answer
    assert again.returncode == 0, again.stderr


def test_reload_as_systemd_runs_it_answers_78_for_a_file_that_is_not_toml(tmp_path: Path) -> None:
    """$RUNTIME_DIRECTORY and --pid $MAINPID, as ExecReload=: even unparsable TOML gets 78."""
    config = write_config(tmp_path)
    run_dir = tmp_path / "run-biaswatch"  # what RuntimeDirectory= would create
    run_dir.mkdir(mode=0o750)
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    with running_service(config, env=env) as service:
        pid_written = (run_dir / "biaswatch.pid").read_text()
        config.write_text(config.read_text().replace("expected_frames = 5", "expected_frames = ="))
        pid = str(service.proc.pid)
        result = run_cli("reload", "--config", config, "--pid", pid, "--json", env=env, timeout=120)
        alive = service.proc.poll() is None
        assert service.stop()[0] == 0

    assert pid_written == f"{pid}\n"
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["exit_status"] == EX_CONFIG and error["pid"] == int(pid)
    assert error["problems"] and alive


def test_plain_sighup_still_reloads_and_leaves_no_answer(tmp_path: Path) -> None:
    """kill -HUP with no request: the service re-executes as before, no answer file written."""
    config = write_config(tmp_path)
    with running_service(config) as service:
        service.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: service.messages.count("READY=1") == 2, 60, "READY=1 again")
        run_dir = tmp_path / "state" / "run"
        left = sorted(p.name for p in run_dir.iterdir())
        assert service.stop()[0] == 0
    assert left == ["biaswatch.pid"]
    assert len(service.events("service.started")) == 2


def test_reloads_asked_at_once_are_each_answered(tmp_path: Path) -> None:
    """Three reload commands started together: each gets its answer (0), the service runs on."""
    config = write_config(tmp_path)
    command = [sys.executable, "-m", "biaswatch", "reload", "--config", str(config)]
    with running_service(config) as service:
        pending = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        results = [(p.wait(timeout=120), p.communicate()) for p in pending]
        alive = service.proc.poll() is None
        left = sorted(p.name for p in (tmp_path / "state" / "run").iterdir())
        assert service.stop()[0] == 0

    assert [status for status, _ in results] == [0, 0, 0], results
    assert alive and left == ["biaswatch.pid"]
    assert 2 <= len(service.events("service.started")) <= 4  # signals may coalesce
