"""status's facts for its assessment: the last finished night, an unreadable lock (no process)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from biaswatch.cli.status import gather, last_finished_night, render_status
from biaswatch.config import Config, load_config
from biaswatch.system import pidfile

UTC = dt.UTC


def chicago_config(tmp_path: Path) -> Config:
    """Camera cryo at the site's defaults: Chicago, rollover 12:00, night end 10:00."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[service]\nstate_dir = "state"\n[site]\ntimezone = "America/Chicago"\n'
        '[cameras.cryo]\nwatch = ["in"]\n'
    )
    return load_config(config)


@pytest.mark.parametrize(
    ("now", "night"),
    [
        # 10:09 Chicago (16:09 UTC): night end 10:00 passed, but not its 10-minute check.
        (dt.datetime(2026, 12, 5, 16, 9, tzinfo=UTC), "2026-12-03"),
        # 10:11: the night of the 4th has ended and been checked by the service.
        (dt.datetime(2026, 12, 5, 16, 11, tzinfo=UTC), "2026-12-04"),
        # 23:00 on the 5th, its own night running: the 4th is the last finished one.
        (dt.datetime(2026, 12, 6, 5, 0, tzinfo=UTC), "2026-12-04"),
    ],
)
def test_the_last_finished_night_is_the_one_the_service_has_checked(
    tmp_path: Path, now: dt.datetime, night: str
) -> None:
    """A night counts as finished once its night end plus the service's 10-minute check passed."""
    config = chicago_config(tmp_path)
    assert last_finished_night(config, config.cameras[0], now) == night


def test_a_lock_file_status_may_not_read_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file that cannot be read: the service's state is UNKNOWN (3), the reason named."""
    config = chicago_config(tmp_path)

    def refused(state_dir: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pidfile, "running", refused)
    report = gather(config, dt.datetime(2026, 12, 5, tzinfo=UTC), {tmp_path / "in": "ok"})
    assert report["assessment"] == {
        "status": "UNKNOWN",
        "code": 3,
        "reasons": ["cannot tell whether the service runs"],
    }
    lines = render_status(report).splitlines()
    assert lines[0] == "BIASWATCH UNKNOWN - cannot tell whether the service runs"
    assert lines[1] == f"service: unknown (cannot read {pidfile.path_for(tmp_path / 'state')}: " + (
        "Permission denied)"
    )


def test_the_timeout_option_defaults_to_the_probe_seconds() -> None:
    """--timeout's default (options.py, kept light) is status's PROBE_SECONDS, shown in its help."""
    from biaswatch.cli.main import build_parser
    from biaswatch.cli.status import PROBE_SECONDS

    parser = build_parser()
    assert parser.parse_args(["status"]).timeout == PROBE_SECONDS
    assert parser.parse_args(["status", "--timeout", "0.5"]).timeout == 0.5
