"""rules/monitoring.py: the Nagios state status reports, from facts alone (no files)."""

from __future__ import annotations

from biaswatch.rules.monitoring import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    Assessment,
    CameraFacts,
    assess,
)


def camera(
    name: str = "cryo",
    *,
    directories: tuple[tuple[str, str], ...] = (("/data/cryo", "ok"),),
    night: str | None = "2026-12-03",
    frames: int = 10,
    accepted: int = 1,
    newest: str | None = "accepted",
    first: str | None = "2026-11-01",
) -> CameraFacts:
    """A camera whose last finished night went well unless told otherwise."""
    return CameraFacts(name, directories, night, frames, accepted, newest, first)


def test_all_well_is_ok_with_no_reason() -> None:
    """A running service and every camera with its master is OK, code 0, no reason."""
    verdict = assess(True, [camera(), camera("te")])
    assert verdict == Assessment(OK, ())
    assert verdict.line() == "BIASWATCH OK - every camera has its master"


def test_service_not_running_is_critical() -> None:
    """A service that does not run is CRITICAL, whatever the cameras."""
    verdict = assess(False, [camera()])
    assert (verdict.code, verdict.reasons) == (CRITICAL, ("service not running",))


def test_service_state_unreadable_is_unknown() -> None:
    """A lock file that cannot be read leaves the service's state UNKNOWN (3)."""
    verdict = assess(None, [camera()])
    assert (verdict.name, verdict.code) == ("UNKNOWN", UNKNOWN)
    assert verdict.reasons == ("cannot tell whether the service runs",)


def test_frames_without_an_accepted_master_are_critical() -> None:
    """A finished night with frames but no accepted master is CRITICAL, naming camera and night."""
    verdict = assess(True, [camera(accepted=0, newest="rejected")])
    assert verdict.code == CRITICAL
    assert verdict.reasons == (
        "cryo: no accepted master for night 2026-12-03",
        "cryo: its newest master was rejected",
    )


def test_a_silent_night_is_a_warning_not_critical() -> None:
    """A finished night without a single frame is a WARNING: nothing to combine, nothing missed."""
    verdict = assess(True, [camera(frames=0, accepted=0)])
    assert (verdict.code, verdict.reasons) == (WARNING, ("cryo: no frame in night 2026-12-03",))


def test_no_finished_night_yet_asks_for_nothing() -> None:
    """Before any catalog (no last night), a camera without frames or master is OK."""
    verdict = assess(True, [camera(night=None, frames=0, accepted=0, newest=None)])
    assert verdict == Assessment(OK, ())


def test_a_directory_not_answering_is_a_warning_naming_it() -> None:
    """A hung or unreadable watch directory is a WARNING naming the camera, path and problem."""
    dirs = (("/data/cryo", "not answering (hung mount?)"), ("/data/cryo2", "ok"))
    verdict = assess(True, [camera(directories=dirs)])
    assert verdict.code == WARNING
    assert verdict.reasons == ("cryo: /data/cryo not answering (hung mount?)",)
    assert verdict.line() == "BIASWATCH WARNING - cryo: /data/cryo not answering (hung mount?)"


def test_a_rejected_newest_master_alone_is_a_warning() -> None:
    """A rejected newest master while the night has an accepted one is a WARNING."""
    verdict = assess(True, [camera(newest="rejected")])
    assert (verdict.code, verdict.reasons) == (WARNING, ("cryo: its newest master was rejected",))


def test_reasons_are_worst_first_and_in_found_order_within_a_state() -> None:
    """CRITICAL outranks UNKNOWN outranks WARNING; equal states keep the order found."""
    hung = (("/data/te", "missing"),)
    verdict = assess(
        None,
        [camera(frames=0, accepted=0), camera("te", directories=hung, accepted=0)],
    )
    assert verdict.code == CRITICAL
    assert verdict.reasons == (
        "te: no accepted master for night 2026-12-03",
        "cannot tell whether the service runs",
        "cryo: no frame in night 2026-12-03",
        "te: /data/te missing",
    )
    assert verdict.line().startswith("BIASWATCH CRITICAL - te: no accepted master")


def test_unknown_outranks_warning() -> None:
    """An unreadable service state with a WARNING camera is UNKNOWN (Nagios' service ranking)."""
    verdict = assess(None, [camera(newest="rejected")])
    assert verdict.code == UNKNOWN
    assert verdict.reasons == (
        "cannot tell whether the service runs",
        "cryo: its newest master was rejected",
    )


def test_nights_before_a_cameras_first_frame_are_not_judged() -> None:
    """A fresh install or a new camera (no frame yet, or first frames later) is not silent."""
    fresh = camera(frames=0, accepted=0, newest=None, first=None)
    assert assess(True, [fresh]) == Assessment(OK, ())
    started_later = camera(frames=0, accepted=0, newest=None, first="2026-12-04")
    assert assess(True, [started_later]) == Assessment(OK, ())
    silent_since = camera(frames=0, accepted=0, first="2026-12-03")
    verdict = assess(True, [silent_since])
    assert (verdict.code, verdict.reasons) == (WARNING, ("cryo: no frame in night 2026-12-03",))
