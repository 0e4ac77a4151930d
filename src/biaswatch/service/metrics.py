"""Prometheus metrics: a textfile for node_exporter, and optionally an HTTP endpoint.

The catalog is the truth, so every gauge and histogram is computed from it at write
time (catalog/tallies.py): a restart keeps them, and nothing is counted twice. Only
what the catalog does not hold comes from the service: alarms raised (a counter) and
which cameras are stalled or degraded right now (gauges, from service/health and the
watchers), handed over by the main loop each turn (:meth:`Metrics.note`). A thread
with its own read-only connection reads the catalog and writes the file every
``metrics_seconds``, so the main loop is not slowed.

Names follow prometheus.io/docs/practices/naming: the ``biaswatch_`` prefix, base
units (seconds), ``_total`` for counters.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, start_http_server, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from biaswatch.catalog.open import open_reading
from biaswatch.catalog.store import Catalog
from biaswatch.catalog.tallies import Tallies

log = structlog.get_logger(__name__)

# Last frame written (its mtime) -> master published, seconds. The README's measured
# latency is 1-3 s beyond settle_seconds when a set completes by its count (latency.py,
# issue 15); one completed by quiet_seconds or night_end waits minutes to hours, and a
# backlog days (counted in +Inf): buckets from 1 s to 12 h.
LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 10800.0, 43200.0)
# A combine (first start -> last answer of its successful runs): about 1 s for ten
# 2k x 2k frames on one core, tens of seconds for 4k x 4k sets, longer on a cluster.
COMBINE_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0, 300.0, 900.0)
# Frame statuses as the catalog stores them -> the outcome exported: a combined frame
# was a valid one; a frame only 'seen' has not been judged yet and is not counted.
FRAME_OUTCOMES = {"valid": "valid", "combined": "valid", "ignored": "ignored"}
FRAME_OUTCOMES |= {"rejected": "rejected"}


@dataclass(frozen=True, slots=True)
class Live:
    """What only the running service knows, handed over by the main loop."""

    cameras: tuple[str, ...]
    stalled: frozenset[str]
    degraded: frozenset[str]


def families(tallies: Tallies, live: Live, now: dt.datetime) -> list[Metric]:
    """The catalog's and the service's state as Prometheus families (pure)."""
    return [
        _counted(
            "biaswatch_frames",
            "Frames in the catalog by outcome (valid includes combined).",
            "outcome",
            [(c, FRAME_OUTCOMES[s], n) for c, s, n in tallies.frames if s in FRAME_OUTCOMES],
        ),
        _counted("biaswatch_sets", "Sets in the catalog by state.", "state", tallies.sets),
        _counted("biaswatch_masters", "Masters by verdict.", "verdict", tallies.masters),
        _waiting(tallies),
        *_last_accepted(tallies, now),
        _histogram(
            "biaswatch_publish_latency_seconds",
            "Last frame of a set written (its mtime) to its master published.",
            tallies.latencies,
            LATENCY_BUCKETS,
        ),
        _histogram(
            "biaswatch_combine_duration_seconds",
            "Combine time of each published set (its successful runs).",
            tallies.combines,
            COMBINE_BUCKETS,
        ),
        _flags(
            "biaswatch_camera_stalled",
            "1 while the camera's files give no answer.",
            live,
            live.stalled,
        ),
        _flags(
            "biaswatch_camera_degraded",
            "1 while the camera's watch is degraded (polling).",
            live,
            live.degraded,
        ),
    ]


def _counted(
    name: str, doc: str, label: str, rows: Iterable[tuple[str, str, int]]
) -> GaugeMetricFamily:
    summed: dict[tuple[str, str], int] = {}
    for camera, value, count in rows:
        summed[camera, value] = summed.get((camera, value), 0) + count
    family = GaugeMetricFamily(name, doc, labels=["camera", label])
    for (camera, value), count in sorted(summed.items()):
        family.add_metric([camera, value], count)
    return family


def _waiting(tallies: Tallies) -> GaugeMetricFamily:
    # A 'closed' set is complete and waits for its combine (now, or its retry's time).
    family = GaugeMetricFamily(
        "biaswatch_combines_waiting", "Complete sets waiting for a combine.", labels=["camera"]
    )
    for camera, state, count in tallies.sets:
        if state == "closed":
            family.add_metric([camera], count)
    return family


def _last_accepted(tallies: Tallies, now: dt.datetime) -> list[GaugeMetricFamily]:
    stamp = GaugeMetricFamily(
        "biaswatch_last_accepted_master_timestamp_seconds",
        "When the newest accepted master was made (Unix time).",
        labels=["camera"],
    )
    age = GaugeMetricFamily(
        "biaswatch_last_accepted_master_age_seconds",
        "Seconds since the newest accepted master was made.",
        labels=["camera"],
    )
    for camera, created in tallies.last_accepted:
        stamp.add_metric([camera], created.timestamp())
        age.add_metric([camera], max(0.0, (now - created).total_seconds()))
    return [stamp, age]


def _histogram(
    name: str, doc: str, rows: Iterable[tuple[str, float]], buckets: Sequence[float]
) -> HistogramMetricFamily:
    per_camera: dict[str, list[float]] = {}
    for camera, seconds in rows:
        per_camera.setdefault(camera, []).append(max(0.0, seconds))
    family = HistogramMetricFamily(name, doc, labels=["camera"])
    for camera, values in sorted(per_camera.items()):
        cumulative = [(_le(b), sum(v <= b for v in values)) for b in buckets]
        cumulative.append(("+Inf", len(values)))
        family.add_metric([camera], cumulative, sum_value=sum(values))
    return family


def _le(bound: float) -> str:
    return repr(float(bound))


def _flags(name: str, doc: str, live: Live, raised: frozenset[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["camera"])
    for camera in live.cameras:
        family.add_metric([camera], 1.0 if camera in raised else 0.0)
    return family


class _Snapshot(Collector):
    """The families last computed; an HTTP scrape reads them without the catalog."""

    def __init__(self) -> None:
        self.latest: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.latest)  # one reference read: replaced whole by the writer


class Metrics:
    """The service's registry (not the global one), its textfile and HTTP endpoint.

    The catalog is read on a thread of its own, over its own read-only connection: on
    a catalog of 200,000 frames and 20,000 masters the reading takes 0.3 s, which the
    main loop must not wait for every metrics_seconds.
    """

    def __init__(
        self,
        path: Path | None,
        address: str | None,
        seconds: float,
        now: Callable[[], dt.datetime],
    ) -> None:
        self._path, self._address, self._seconds, self._now = path, address, seconds, now
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self._alarms = Counter(
            "biaswatch_alarms",
            "Alarms raised since the service started, by name.",
            ["camera", "alarm"],
            registry=self.registry,
        )
        self._live = Live((), frozenset(), frozenset())
        self._problem = ""
        self._server: WSGIServer | None = None
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def enabled(self) -> bool:
        """Whether anything is exported at all."""
        return self._path is not None or self._address is not None

    def alarm(self, name: str, **details: Any) -> None:
        """Count one alarm (called by Alarms, from any thread)."""
        self._alarms.labels(str(details.get("camera", "")), name).inc()

    def note(self, live: Live) -> None:
        """The main loop's view, read by the writer at its next write (one reference)."""
        self._live = live

    def write(self, tallies: Tallies) -> None:
        """Compute every family from ``tallies`` and the live view; write the textfile."""
        self._snapshot.latest = families(tallies, self._live, self._now())
        if self._path is not None:
            write_to_textfile(str(self._path), self.registry)

    def start(self, catalog: Path) -> None:
        """Open the HTTP endpoint if configured, and start writing every metrics_seconds."""
        if not self.enabled:
            return
        self._serve()
        self._writer = threading.Thread(
            target=self._run, args=(catalog,), name="metrics", daemon=True
        )
        self._writer.start()

    def stop(self) -> None:
        """Write one last time, stop the writer and close the HTTP endpoint."""
        self._stopping.set()
        if self._writer is not None:
            # Its last write takes 0.3 s on a large catalog (above); 10 s spares a slow disk.
            self._writer.join(timeout=10.0)
            self._writer = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self) -> None:
        if self._address is None:
            return
        host, _, port = self._address.rpartition(":")
        try:
            self._server, _thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=self.registry
            )
        except OSError as exc:  # the port taken: the service runs on without it
            log.error("metrics.http_failed", address=self._address, error=str(exc))
            return
        log.info("metrics.serving", address=self._address)

    def _run(self, path: Path) -> None:
        catalog: Catalog | None = None
        try:
            while True:
                catalog = self._write_once(path, catalog)
                if self._stopping.wait(self._seconds):
                    self._write_once(path, catalog)  # the file ends with the last counts
                    return
        finally:
            if catalog is not None:  # closed before the service's own, which checkpoints
                catalog.close()

    def _write_once(self, path: Path, catalog: Catalog | None) -> Catalog | None:
        try:
            catalog = catalog or open_reading(path)
            if catalog is not None:
                self.write(catalog.tallies())
        except Exception as exc:  # one write: the service must not stop for its metrics
            self._said(f"{type(exc).__name__}: {exc}")
        else:
            self._said("")
        return catalog

    def _said(self, problem: str) -> None:
        # Logged once when it starts failing and once when it recovers, not every 15 s.
        if problem and problem != self._problem:
            log.warning("metrics.write_failed", file=str(self._path), error=problem)
        elif not problem and self._problem:
            log.info("metrics.written_again", file=str(self._path))
        self._problem = problem


def live_state(
    cameras: Sequence[str], stalled: Mapping[str, float], degraded: Sequence[str]
) -> Live:
    """The service's view: a degraded watch is named '<camera>: why' (watch/observers)."""
    named = frozenset(text.split(":", 1)[0] for text in degraded)
    return Live(tuple(cameras), frozenset(stalled), named)
