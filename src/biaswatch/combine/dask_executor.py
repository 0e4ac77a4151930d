"""The Dask executor: calibrations and combines as tasks on a ``distributed`` cluster.

The service keeps watching, grouping, cataloguing and publishing on its own
machine; the cluster only computes. Each combine is submitted with the resource
``MEMORY`` = ``[service] mem_limit``, so a worker started with
``--resources MEMORY=<bytes>`` runs no more combines at once than its budget
holds. A stack larger than mem_limit comes back from its first task as a
:class:`tasks.Split`; its row bands are then combined on several workers and
assembled into the master, byte for byte what the local engine writes.

What Dask promises and what it does not (distributed's docs, "Resilience"):

* a worker that dies mid-task: the scheduler runs the task again elsewhere, up to
  ``distributed.scheduler.allowed-failures`` (3) times, then the future fails with
  ``KilledWorker``, which counts here as one failed try (service/combines.py retries);
* a scheduler that goes away: the client cancels every future. They are
  submitted again here once a scheduler answers at the same address, so the set
  is neither lost nor counted as failed; a lost run that still finishes only
  leaves a temporary file (removed at the next start), never a second master.

Every run of a task announces itself from its worker (dask_tasks.py, a Dask event
topic); those announcements are the catalog's attempt history.

A combine no worker can take (none offers its MEMORY: dask_capacity.py) is
reported as ``executor.no_capable_worker`` at start and once it has waited
WAIT_SECONDS; with ``fallback_local`` it is then cancelled on the cluster and
combined in a child process here (child.py), its attempt recorded with
executor "local". A ``tls://`` scheduler is reached with the ``[service] tls_*``
certificate, key and CA.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import structlog

from biaswatch.combine.child import CombineJob, CombineResult, start_server
from biaswatch.combine.dask_calibrator import Calibrator
from biaswatch.combine.dask_capacity import (
    CACHE_SECONDS,
    CONNECT_SECONDS,
    REPEAT_SECONDS,
    WAIT_SECONDS,
    Capacity,
    capacity,
    connect,
    no_capable_worker_action,
    resources_flag,
    security_for,
)
from biaswatch.combine.dask_tasks import (
    MEMORY,
    TOPIC,
    Split,
    assemble_task,
    band_task,
    combine_task,
)
from biaswatch.combine.executors import AttemptEvent, LocalCombine
from biaswatch.config import ServiceConfig
from biaswatch.errors import SchedulerUnreachable

log = structlog.get_logger(__name__)

# A lost scheduler is looked for again this often, from a thread, never the main loop.
RECONNECT_SECONDS = 5.0
# Combines in flight on the cluster: the scheduler queues them by MEMORY; this only
# bounds what the service holds (one job and a few futures each).
MAX_IN_FLIGHT = 64


class DaskExecutor:
    """Combines and calibrations on the cluster behind one scheduler address."""

    name = "dask"
    slots = MAX_IN_FLIGHT

    def __init__(self, service: ServiceConfig, wake: Callable[[], None]) -> None:
        assert service.scheduler is not None  # config.py: executor = "dask" needs one
        self.address = service.scheduler
        self.mem_limit = service.mem_limit
        self.fallback_local = service.fallback_local
        # Combines run here instead, at most as many as the local executor would run.
        self.local_slots = service.combine_slots
        self.local_running = 0
        self._security = security_for(service)
        self._wake = wake
        self._events: queue.SimpleQueue[AttemptEvent] = queue.SimpleQueue()
        self._client: Any = connect(self.address, CONNECT_SECONDS, self._security)
        self._subscribe(self._client)
        self._resubscribe = False
        self._reconnecting = threading.Event()
        self._lock = threading.Lock()
        self._local = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calibrate")
        self._capacity: tuple[float, Capacity] | None = None
        log.info("executor.connected", scheduler=self.address, workers=self._workers())
        if self.fallback_local:  # combines may run here: preload the engine (child.py)
            start_server(lambda _seconds: None)
        self.check_capacity("start")

    # --- connection ---------------------------------------------------------

    def client(self) -> Any:
        """The client while it is connected; None while the scheduler is away.

        Called from the main loop and from the lanes (calibrations), hence the lock.
        """
        with self._lock:
            client = self._client
            if client is not None and client.status == "running":
                if self._resubscribe:  # it reconnected by itself: topics are not kept
                    self._resubscribe = False
                    self._subscribe(client)
                return client
            self._resubscribe = True
            if (client is None or client.status == "closed") and not self._reconnecting.is_set():
                self._reconnecting.set()
                threading.Thread(target=self._reconnect, name="dask-reconnect", daemon=True).start()
            return None

    def _reconnect(self) -> None:
        log.warning("executor.disconnected", scheduler=self.address, action="reconnecting")
        while True:
            try:
                client = connect(self.address, RECONNECT_SECONDS, self._security)
            except SchedulerUnreachable:
                time.sleep(RECONNECT_SECONDS)
                continue
            self._subscribe(client)
            with self._lock:
                self._client = client
                self._resubscribe = False
                self._reconnecting.clear()
            log.info("executor.connected", scheduler=self.address, workers=self._workers())
            self._wake()
            return

    def _subscribe(self, client: Any) -> None:
        client.subscribe_topic(TOPIC, self._on_event)

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        self._events.put(
            AttemptEvent(
                int(message["set"]),
                str(message["task"]),
                str(message["where"]),
                message["kind"],
                message.get("reason"),
            )
        )
        self._wake()

    def _workers(self) -> int:
        client = self._client
        if client is None:
            return 0
        try:
            return len(client.scheduler_info(n_workers=-1)["workers"])
        except Exception:  # only for the log line
            return 0

    # --- workers able to combine -------------------------------------------

    def capacity(self) -> Capacity | None:
        """Workers offering mem_limit of MEMORY (asked at most every CACHE_SECONDS)."""
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < CACHE_SECONDS:
            return self._capacity[1]
        client = self.client()
        if client is None:
            return None
        try:
            answer = capacity(client, self.mem_limit)
        except Exception as exc:  # the scheduler went away meanwhile: ask again later
            log.debug("executor.capacity_unknown", reason=f"{type(exc).__name__}: {exc}")
            return None
        self._capacity = (now, answer)
        return answer

    def check_capacity(self, when: str, **context: object) -> bool:
        """Warn (executor.no_capable_worker) unless some worker can take a combine."""
        found = self.capacity()
        if found is None or found.capable:
            return True
        self.warn_incapable(found, when, **context)
        return False

    def warn_incapable(self, found: Capacity, when: str, **context: object) -> None:
        """Log executor.no_capable_worker: what the workers offer, the flag to add."""
        log.warning(
            "executor.no_capable_worker",
            scheduler=self.address,
            when=when,
            workers=found.workers,
            needs=f"{MEMORY}={self.mem_limit}",
            largest_offered=found.largest,
            resources=resources_flag(self.mem_limit),
            action=no_capable_worker_action(self.address, self.mem_limit, self.fallback_local),
            **context,
        )

    def start_local(self, job: CombineJob, wake: Callable[[], None]) -> LocalCombine:
        """Combine ``job`` in a child process here; its attempt says executor "local"."""
        self.local_running += 1
        return LocalCombine(job, wake, self._report_local)

    def _report_local(self, event: AttemptEvent) -> None:
        self._events.put(dataclasses.replace(event, executor="local"))

    # --- the executor -------------------------------------------------------

    def start(self, job: CombineJob, wake: Callable[[], None]) -> DaskCombine:
        """Submit ``job`` (now, or once the scheduler is back)."""
        return DaskCombine(self, job, wake)

    def events(self) -> list[AttemptEvent]:
        """Attempt announcements received since the last call."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def calibrator(self) -> Executor:
        """Calibrations on the cluster; on this machine while the scheduler is away."""
        return Calibrator(self.client, self._local)

    def close(self) -> None:
        """Close the client; calibrations still on local threads are abandoned."""
        self._local.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            client.close(timeout=5)


class DaskCombine:
    """One set's combine on the cluster: one task, or bands and their assembly."""

    def __init__(self, executor: DaskExecutor, job: CombineJob, wake: Callable[[], None]) -> None:
        self.job = job
        self._executor = executor
        self._wake = wake
        self._future: Any = None  # distributed.Future of a CombineResult or a Split
        self._submitted_to: Any = None
        self._check_at = 0.0  # when to ask whether any worker can take it (monotonic)
        self._warn_at = 0.0  # when to say again that none can
        self._waiting_since = 0.0
        self._here: LocalCombine | None = None  # run here instead (fallback_local)
        self._submit(lambda client: client.submit(combine_task, job, **self._options("combine")))

    def _options(self, task: str) -> dict[str, Any]:
        return {
            "resources": {MEMORY: self.job.info.mem_limit},
            "pure": False,
            "key": f"biaswatch-set{self.job.set_id}-{task}-{time.time_ns()}",
        }

    def _submit(self, submit: Callable[[Any], Any]) -> None:
        self._resubmit = submit
        client = self._executor.client()
        if client is None:
            self._future = None
            return
        self._future = submit(client)
        self._submitted_to = client
        self._waiting_since = time.monotonic()
        self._check_at = self._waiting_since + WAIT_SECONDS
        self._warn_at = self._check_at
        self._future.add_done_callback(lambda _future: self._wake())

    def poll(self) -> CombineResult | None:
        """The master's result, a failed try's reason, or None while it runs."""
        if self._here is not None:
            return self._poll_here(self._here)
        future = self._future
        if future is None or future.status in ("cancelled", "lost"):
            self._after_loss(future)
            return None
        if future.status == "pending" and time.monotonic() >= self._check_at:
            self._check_workers()
            if self._here is not None:
                return None
        if future.status == "error":
            exc = future.exception()
            return CombineResult(self.job.set_id, None, f"{type(exc).__name__}: {exc}")
        if future.status != "finished":
            return None
        answer = future.result()
        if isinstance(answer, Split):
            self._split(answer)
            return None
        result: CombineResult = answer
        return result

    def _after_loss(self, future: Any) -> None:
        # The scheduler went away (the client cancels its futures): submit again once a
        # scheduler answers. Not a failed try: the set's inputs are fine.
        if future is not None:
            log.warning(
                "combine.lost",
                set=self.job.set_id,
                camera=self.job.info.camera,
                night=self.job.info.night,
                reason="the Dask scheduler went away",
                action="submitted again when it answers",
            )
            self._future = None
        if self._executor.client() is not None:
            self._submit(self._resubmit)
            log.info("combine.resubmitted", set=self.job.set_id, scheduler=self._executor.address)

    def _check_workers(self) -> None:
        # A pending future may be running or waiting; with no worker offering its
        # MEMORY it can only be waiting, and would wait forever.
        executor, job, now = self._executor, self.job, time.monotonic()
        context = {
            "set": job.set_id,
            "camera": job.info.camera,
            "night": job.info.night,
            "waited": round(now - self._waiting_since, 1),
        }
        # Asked again every WAIT_SECONDS (one cached answer serves every waiting combine);
        # said again every REPEAT_SECONDS while no worker can take it.
        self._check_at = now + WAIT_SECONDS
        found = executor.capacity()
        if found is None or found.capable:
            return
        if now >= self._warn_at:
            self._warn_at = now + REPEAT_SECONDS
            executor.warn_incapable(found, "waiting", **context)
        if not executor.fallback_local or executor.local_running >= executor.local_slots:
            return  # it waits: for a capable worker, or for a free slot here
        log.warning(
            "executor.local_fallback",
            **context,
            reason=f"no Dask worker offers {MEMORY}={job.info.mem_limit}",
            action="combining on this machine (fallback_local = true)",
        )
        self.stop()
        self._here = executor.start_local(job, self._wake)

    def _poll_here(self, here: LocalCombine) -> CombineResult | None:
        result = here.poll()
        if result is not None:
            self._release_here()
        return result

    def _release_here(self) -> None:
        if self._here is not None:
            self._here = None
            self._executor.local_running -= 1

    def _split(self, split: Split) -> None:
        job, count = self.job, len(split.bands)
        log.info("combine.split", set=job.set_id, bands=count, rows=list(split.bands))

        def submit(client: Any) -> Any:
            bands = [
                client.submit(band_task, job, band, f"band {i}/{count}", **self._options(f"b{i}"))
                for i, band in enumerate(split.bands, start=1)
            ]
            return client.submit(assemble_task, job, *bands, **self._options("assemble"))

        self._submit(submit)

    def stop(self) -> None:
        """Cancel the task(s); a set left combining is closed again by the service."""
        if self._here is not None:
            self._here.stop()
            self._release_here()
        future, self._future = self._future, None
        if future is not None and self._submitted_to is not None:
            try:
                self._submitted_to.cancel([future], force=True)
            except Exception:  # the scheduler may already be gone; nothing else to do
                log.debug("combine.cancel_failed", set=self.job.set_id)
