"""Helpers every test tier shares: the harness config and its frames, a camera, a catalog,
waiting, a free port and running a command.

Nothing here imports pytest or starts anything at import time: this module ships in
the wheel (biaswatch.testing), as the simulated camera does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog
from biaswatch.config import CameraConfig, load_config
from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry, simulate
from biaswatch.testing.fits import FakeClock

# Small but realistic frames: 48 x 40 image with an 8-column overscan strip.
CRYO_GEOMETRY = Geometry(
    rows=40, cols=56, biassec=Section(49, 56, 1, 40), trimsec=Section(1, 48, 1, 40)
)
TE_GEOMETRY = Geometry(rows=36, cols=36, biassec=None, trimsec=Section(1, 32, 1, 32))


def write_config(
    tmp_path: Path, extra: str = "", service: dict[str, object] | None = None, **defaults: object
) -> Path:
    """A config with cameras cryo (header sections) and te (no overscan, fixed trim)."""
    # Tests date frames in 2030 so that their night never ends while a suite runs:
    # the date_range believed must reach it (the default ends a day from now).
    settings = {
        "settle_seconds": 0.3,
        "expected_frames": 5,
        "date_range": ["1980-01-01", "2100-01-01"],
        # Frames dated now must fall in a night that has not ended, whatever the hour:
        # at the default 10:00, a run between 10:00 and the 12:00 rollover (Chicago;
        # 16:00-18:00 UTC) saw sets combined at min_frames by the night-end rule.
        "night_end": "11:59",
        **defaults,
    }
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    # ``service`` overrides these (log_file = "-" for journald), or adds to them.
    service = {
        "state_dir": "state",
        "masters_dir": "masters",
        "log_file": "log/biaswatch.jsonl",
        "poll_seconds": 0.1,
        **(service or {}),
    }
    service_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in service.items())
    text = (
        textwrap.dedent(
            """
        [service]
        {service_lines}
        [site]
        timezone = "America/Chicago"
        [defaults]
        {lines}
        [cameras.cryo]
        watch = ["incoming/cryo"]
        [cameras.te]
        watch = ["incoming/te"]
        [cameras.te.calibrate]
        overscan = "none"
        trim = "[1:32,1:32]"
        """
        )
        .replace("{lines}", lines)
        .replace("{service_lines}", service_lines)
    )
    path = tmp_path / "config.toml"
    path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
    for camera in ("cryo", "te"):
        (tmp_path / "incoming" / camera).mkdir(parents=True, exist_ok=True)
    return path


def camera_of(config_path: Path, name: str) -> CameraConfig:
    """The camera's validated settings from the config file."""
    return load_config(config_path).camera(name)


def write_frames(
    config_path: Path,
    name: str,
    frames: int,
    *,
    interval: float = 0.2,
    seed: int = 1,
    now: Callable[[], dt.datetime] | None = None,
    geometry: Geometry | None = None,
    out_dir: Path | None = None,
) -> list[Path]:
    """Write realistic raw biases for a camera, each in pieces, as a camera does."""
    geometry = geometry or (CRYO_GEOMETRY if name == "cryo" else TE_GEOMETRY)
    return simulate(
        camera_of(config_path, name),
        frames=frames,
        interval=interval,
        seed=seed,
        geometry=geometry,
        pieces=3,
        piece_delay=0.1,
        out_dir=out_dir,
        now=now or (lambda: dt.datetime.now(dt.UTC)),
    )


def cryo_camera(watch: Path, **settings: object) -> CameraConfig:
    """Camera ``cryo`` watching ``watch``, every other setting its default unless given."""
    return CameraConfig.model_validate({"name": "cryo", "watch": [str(watch)], **settings})


def valid_frame(
    path: str, night: str = "2026-11-24", geometry: str = "48x40-1x1", camera: str = "cryo"
) -> FrameRecord:
    """A valid frame record for the catalog (content hash: the path twice)."""
    return FrameRecord(
        path,
        camera,
        100,
        1,
        status="valid",
        sha256=path * 2,
        night=night,
        geometry=geometry,
        calibrated=f"/work/{path}",
        date_obs="2026-11-25T02:00:00",
    )


def catalog_in(directory: Path, clock: FakeClock | None = None) -> Catalog:
    """A real SQLite catalog at ``directory``/catalog.sqlite, dated by ``clock`` (a FakeClock)."""
    return Catalog(directory / "catalog.sqlite", now=(clock or FakeClock()).now)


def wait_until(
    condition: Callable[[], bool],
    timeout: float = 30.0,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` every ``interval`` s until true; fail with ``what`` after ``timeout`` s.

    ``what`` may be a function, called only on failure, so that a message holding the
    service's log shows the log as it was when the wait gave up, not when it began.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    message = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


# A metric sample: (name, its labels sorted) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Every sample in a Prometheus exposition text, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(
    *args: str | Path,
    check: bool = False,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m biaswatch ARGS`` in a child process (``env`` added to ours), output as text.

    With ``check``, a non-zero exit raises AssertionError carrying the command's stderr:
    CalledProcessError's message names only the exit status, and a failing test should
    say why.
    """
    result = subprocess.run(
        [sys.executable, "-m", "biaswatch", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
    if check and result.returncode != 0:
        shown = " ".join(map(str, args))
        raise AssertionError(f"biaswatch {shown} exited {result.returncode}:\n{result.stderr}")
    return result
