"""``biaswatch run`` on overlapping directories: a configuration error, exit 78, nothing touched."""

from __future__ import annotations

import time
from pathlib import Path

from biaswatch.testing.helpers import write_config
from biaswatch.testing.service import ServiceProcess


def test_run_on_overlapping_directories_exits_78_at_once_naming_the_paths(
    tmp_path: Path,
) -> None:
    """masters_dir via '..' in a watched tree and two cameras on one tree: exit 78, nothing made."""
    config = write_config(tmp_path)
    (tmp_path / "incoming" / "link").symlink_to(tmp_path / "incoming" / "cryo")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            'masters_dir = "masters"', 'masters_dir = "incoming/zz/../cryo/masters"'
        ).replace('watch = ["incoming/te"]', 'watch = ["incoming/link"]'),
        encoding="utf-8",
    )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    service = ServiceProcess(config)
    try:
        start = time.monotonic()
        status = service.proc.wait(timeout=30)
        seconds = time.monotonic() - start
    finally:
        service.close()
    output = (tmp_path / "service-output.txt").read_text(encoding="utf-8")
    incoming = tmp_path / "incoming"
    assert status == 78, output
    assert seconds < 30  # at once: the Python start-up and one config read
    assert "READY=1" not in service.messages
    assert "configuration error" in output
    assert (
        f'[service] masters_dir: "{incoming}/zz/../cryo/masters" '
        f'(resolved: "{incoming}/cryo/masters") is inside camera cryo\'s watched directory '
        f'"{incoming}/cryo"'
    ) in output
    assert (
        f'[cameras.te] watch: "{incoming}/link" (resolved: "{incoming}/cryo") is camera '
        f'cryo\'s watched directory "{incoming}/cryo"'
    ) in output
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == [*before, Path("service-output.txt")]  # no state, masters or log made


def test_a_start_while_a_watched_mount_hangs_is_not_held_by_the_overlap_check(
    tmp_path: Path,
) -> None:
    """Resolving a watch path on a hung mount gives up after 5 s: the service still gets READY."""
    from test_stall import _stalled_config, hanging_mount

    config, backing = _stalled_config(tmp_path)
    with hanging_mount(backing, tmp_path / "incoming" / "cryo") as mount:
        mount.hang()
        service = ServiceProcess(config)
        try:
            start = time.monotonic()
            service.wait_ready(timeout=60)
            seconds = time.monotonic() - start
            mount.resume()
            assert service.stop(timeout=30)[0] == 0
        finally:
            mount.resume()
            service.close()
    output = (tmp_path / "service-output.txt").read_text(encoding="utf-8")
    assert "config.path_unresolved" in output and str(tmp_path / "incoming" / "cryo") in output
    assert seconds < 45
