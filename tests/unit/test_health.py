"""What systemd is told: one STATUS= line for degradations and the newest master."""

from __future__ import annotations

from pathlib import Path

from biaswatch.service.health import Health
from biaswatch.testing.fits import FakeNotifier


def test_a_new_master_does_not_hide_a_degradation_and_recovery_keeps_the_master() -> None:
    """STATUS= names what is degraded and the last master together, and only on change."""
    notifier = FakeNotifier()
    health = Health(notifier, stall_seconds=60)
    health.status(["cryo: polling every 5 s, inotify watch limit reached"])
    health.published(Path("/masters/cryo/2026-11-24/bias_cryo_2026-11-24_01.fits"))
    health.status(["cryo: polling every 5 s, inotify watch limit reached"])  # no change
    health.status([])
    assert notifier.messages == [
        "STATUS=degraded: cryo: polling every 5 s, inotify watch limit reached",
        "STATUS=degraded: cryo: polling every 5 s, inotify watch limit reached;"
        " last master: bias_cryo_2026-11-24_01.fits",
        "STATUS=watching; last master: bias_cryo_2026-11-24_01.fits",
    ]


def test_a_stalled_camera_is_named_in_the_status() -> None:
    """A camera stuck past stall_seconds is named as degraded until it answers again."""
    notifier = FakeNotifier()
    health = Health(notifier, stall_seconds=30)
    health.stalls(100.0, {"te": (31.0, "listing /data/te")})
    health.status([])
    health.stalls(110.0, {"te": (0.0, "idle")})
    health.status([])
    assert notifier.messages == [
        "STATUS=degraded: te: no answer from its files",
        "STATUS=watching",
    ]
