"""Alert commands run by the real service: bounded in memory and in time (issue 11, finding 11)."""

from __future__ import annotations

from pathlib import Path

from test_alarms import gone, shell_script
from test_load import status_kib

from biaswatch.testing.helpers import wait_until, write_config, write_frames
from biaswatch.testing.service import running_service

MIB = 2**20


def test_a_hanging_noisy_alert_command_costs_the_service_nothing(tmp_path: Path) -> None:
    """An alert command that prints 60 MB, forks a child and hangs is ended, group and all.

    The service's peak memory stays put, ``alert.failed`` says the group was killed, and the
    service goes on publishing.
    """
    pids = tmp_path / "pids"
    script = (
        f"sleep 300 &\necho $! > {pids}.child\necho $$ > {pids}.command\n"
        "yes out | head -c 30000000\nyes err | head -c 30000000 >&2\nsleep 300\n"
    )
    command = shell_script(tmp_path / "alert.sh", script)
    extra = f"[alerts]\ncommand = {list(command)!r}\ntimeout_seconds = 5\n".replace("'", '"')
    config = write_config(
        tmp_path, extra=extra, service={"combine_retry_seconds": 0.2}, expected_frames=3
    )
    (tmp_path / "masters").mkdir()
    (tmp_path / "masters" / "cryo").write_text("not a directory")  # every try fails: an alarm
    with running_service(config) as service:
        service.wait_event("combine.server_ready", timeout=120)
        before = status_kib(service.proc.pid, "VmRSS") * 1024
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("alarm.set_failed", timeout=120)
        (failed,) = service.wait_event("alert.failed", timeout=60)
        growth = status_kib(service.proc.pid, "VmHWM") * 1024 - before
        write_frames(config, "te", 5, interval=0.0)
        service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    child, parent = (int(Path(f"{pids}.{n}").read_text()) for n in ("child", "command"))
    wait_until(lambda: gone(child) and gone(parent), 5, "the alert command and its child ended")
    assert "process group was killed" in failed["error"]
    # subprocess.run(capture_output=True) held all 60 MB (twice, decoded): +120 MiB or more.
    assert growth < 40 * MIB, f"the service's peak RSS grew by {growth / MIB:.0f} MiB"
