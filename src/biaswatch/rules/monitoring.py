"""What ``biaswatch status`` tells a monitoring system: OK, WARNING or CRITICAL, and why (pure).

The Nagios plugin convention (Nagios Plugin Development Guidelines, "Plugin Return
Codes"), which Icinga and Naemon read as well:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. CRITICAL is what needs a person before the
next night: the service is not running, or a camera's last finished night has frames
but no accepted master. WARNING is degraded but working: a watch directory that
cannot be read (or does not answer: a hung mount), a camera without a single frame in
its last finished night, a newest master that was rejected. UNKNOWN: the service's
state could not be read. The exit status is the worst finding's, ranked as Nagios
ranks a service's states (OK < WARNING < UNKNOWN < CRITICAL); every finding is a
reason, the worst first, in the order found within one state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
# How bad a state is (the worst finding decides): UNKNOWN ranks between WARNING and
# CRITICAL, as Nagios and Icinga rank service states.
SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
ALL_WELL = "every camera has its master"  # the OK line's reason


def status_line(name: str, reasons: Sequence[str]) -> str:
    """The plugin's first output line: ``BIASWATCH WARNING - reason; reason``."""
    return f"BIASWATCH {name} - {'; '.join(reasons) if reasons else ALL_WELL}"


@dataclass(frozen=True)
class CameraFacts:
    """One camera as status found it."""

    name: str
    directories: tuple[tuple[str, str], ...]  # (path, "ok" or what is wrong)
    last_night: str | None  # the last night whose night end (+ check delay) has passed
    last_night_frames: int
    last_night_accepted: int
    newest_master_state: str | None
    # The first night the catalog holds a frame of this camera (None: none yet). A night
    # before it was not watched (a new install, a new camera): nothing was missed then.
    first_night: str | None = None


@dataclass(frozen=True)
class Assessment:
    """The status code and one reason per problem, worst first."""

    code: int
    reasons: tuple[str, ...]

    @property
    def name(self) -> str:
        """OK, WARNING, CRITICAL or UNKNOWN."""
        return NAMES[self.code]

    def line(self) -> str:
        """The plugin's first output line: ``BIASWATCH WARNING - reason; reason``."""
        return status_line(self.name, self.reasons)


def assess(service_running: bool | None, cameras: Sequence[CameraFacts]) -> Assessment:
    """The worst finding over the service and every camera, with every reason."""
    found: list[tuple[int, str]] = []
    if service_running is None:
        found.append((UNKNOWN, "cannot tell whether the service runs"))
    elif not service_running:
        found.append((CRITICAL, "service not running"))
    for camera in cameras:
        found.extend(_camera_findings(camera))
    if not found:
        return Assessment(OK, ())
    found.sort(key=lambda item: -SEVERITY[item[0]])  # stable: found order within a state
    return Assessment(found[0][0], tuple(reason for _, reason in found))


def _camera_findings(camera: CameraFacts) -> list[tuple[int, str]]:
    found = [
        (WARNING, f"{camera.name}: {path} {seen}")
        for path, seen in camera.directories
        if seen != "ok"
    ]
    night = camera.last_night
    if camera.first_night is None or (night is not None and night < camera.first_night):
        night = None  # not watched yet: a fresh install is not a silent camera
    if night is not None and camera.last_night_frames == 0:
        found.append((WARNING, f"{camera.name}: no frame in night {night}"))
    elif night is not None and camera.last_night_accepted == 0:
        found.append((CRITICAL, f"{camera.name}: no accepted master for night {night}"))
    if camera.newest_master_state == "rejected":
        found.append((WARNING, f"{camera.name}: its newest master was rejected"))
    return found
