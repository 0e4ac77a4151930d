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
  ``KilledWorker``, which counts here as one failed try (combines.py retries);
* a scheduler that goes away: the client cancels every future. They are
  submitted again here once a scheduler answers at the same address, so the set
  is neither lost nor counted as failed; a lost run that still finishes only
  leaves a temporary file (removed at the next start), never a second master.

Every run of a task announces itself from its worker (tasks.py, a Dask event
topic); those announcements are the catalog's attempt history.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import structlog

from biaswatch.errors import SchedulerUnreachable
from biaswatch.executors import AttemptEvent
from biaswatch.tasks import MEMORY, TOPIC, Split, assemble_task, band_task, combine_task
from biaswatch.worker import CombineJob, CombineResult

log = structlog.get_logger("biaswatch.cluster")

# The first connection may take this long: the scheduler answers a handshake within
# milliseconds on a LAN; 10 s also covers one that is just starting (its own startup
# is ~2 s, measured with `dask scheduler` here).
CONNECT_SECONDS = 10.0
# A lost scheduler is looked for again this often, from a thread, never the main loop.
RECONNECT_SECONDS = 5.0
# Combines in flight on the cluster: the scheduler queues them by MEMORY; this only
# bounds what the service holds (one job and a few futures each).
MAX_IN_FLIGHT = 64


def connect(address: str, timeout: float = CONNECT_SECONDS) -> Any:
    """A distributed.Client of the scheduler at ``address``; SchedulerUnreachable if none.

    Typed ``Any``: distributed's Client methods carry no annotations.
    """
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s: {exc}"
        ) from exc


class DaskExecutor:
    """Combines and calibrations on the cluster behind one scheduler address."""

    name = "dask"
    slots = MAX_IN_FLIGHT

    def __init__(self, address: str, wake: Callable[[], None]) -> None:
        self.address = address
        self._wake = wake
        self._events: queue.SimpleQueue[AttemptEvent] = queue.SimpleQueue()
        self._client: Any = connect(address)
        self._subscribe(self._client)
        self._resubscribe = False
        self._reconnecting = threading.Event()
        self._lock = threading.Lock()
        self._local = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calibrate")
        log.info("executor.connected", scheduler=address, workers=self._workers())

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
                client = connect(self.address, timeout=RECONNECT_SECONDS)
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
        return _Calibrator(self, self._local)

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
        self._future.add_done_callback(lambda _future: self._wake())

    def poll(self) -> CombineResult | None:
        """The master's result, a failed try's reason, or None while it runs."""
        future = self._future
        if future is None or future.status in ("cancelled", "lost"):
            self._after_loss(future)
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
        future, self._future = self._future, None
        if future is not None and self._submitted_to is not None:
            try:
                self._submitted_to.cancel([future], force=True)
            except Exception:  # the scheduler may already be gone; nothing else to do
                log.debug("combine.cancel_failed", set=self.job.set_id)


class _Calibrator(Executor):
    """``concurrent.futures`` face of the cluster for the lanes' calibrations."""

    def __init__(self, executor: DaskExecutor, local: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._local = local

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """On the cluster when connected; on local threads while the scheduler is away."""
        client = self._executor.client()
        if client is None:
            return self._local.submit(fn, *args, **kwargs)
        future: Future[Any] = client.get_executor(pure=False).submit(fn, *args, **kwargs)
        future.add_done_callback(_log_outcome)
        return future


# A frame's events are logged where it is examined: on a cluster, in the worker's
# journal. The service logs the outcome again so its own log tells the whole night.
_EVENTS = {"valid": "frame.calibrated", "rejected": "frame.rejected", "ignored": "frame.ignored"}


def _log_outcome(future: Future[Any]) -> None:
    if future.cancelled() or future.exception() is not None:
        return  # the intake reports it (frame.calibration_lost)
    record = future.result()
    event = _EVENTS.get(getattr(record, "status", ""))
    if event is not None:
        level = log.warning if record.status == "rejected" else log.info
        level(
            event,
            camera=record.camera,
            file=record.path,
            night=record.night,
            reason=record.reason,
            on="cluster",
        )
