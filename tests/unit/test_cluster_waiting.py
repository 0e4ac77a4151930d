"""A Dask combine that no worker can take: when it is reported, and when it runs here.

The real service against a LocalCluster is in tests/service/test_cluster.py; these tests
drive one DaskCombine with a fake executor and clock, to pin the timing rules
(WAIT_SECONDS, REPEAT_SECONDS, the local slots) without minutes of waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from biaswatch.combine import dask_executor as cluster
from biaswatch.combine.dask_capacity import REPEAT_SECONDS, WAIT_SECONDS, Capacity


class Clock:
    """time.monotonic for combine/dask_executor.py, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        """The time now."""
        return self.now


@dataclass
class Pending:
    """A distributed future that never leaves 'pending'."""

    status: str = "pending"

    def add_done_callback(self, _callback: Any) -> None:
        """Never called back: the task never runs."""


@dataclass
class Client:
    """Hands out pending futures; remembers what was cancelled."""

    cancelled: list[Any] = field(default_factory=list)

    def submit(self, *_args: Any, **_options: Any) -> Pending:
        """A future that stays pending."""
        return Pending()

    def cancel(self, futures: list[Any], force: bool) -> None:  # noqa: ARG002
        """Remember the futures."""
        self.cancelled.extend(futures)


@dataclass
class Executor:
    """The parts of DaskExecutor a DaskCombine uses."""

    capable: int = 0
    fallback_local: bool = False
    local_slots: int = 1
    local_running: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)
    started_here: list[Any] = field(default_factory=list)
    _client: Client = field(default_factory=Client)

    def client(self) -> Client:
        """Always connected."""
        return self._client

    def capacity(self) -> Capacity:
        """One worker, capable or not."""
        return Capacity(workers=1, capable=self.capable, largest=0.0)

    def warn_incapable(self, _found: Capacity, when: str, **context: Any) -> None:
        """Remember the warning."""
        self.warnings.append({"when": when, **context})

    def start_local(self, job: Any, _wake: Any) -> Any:
        """Count a local combine that never ends."""
        self.local_running += 1
        self.started_here.append(job.set_id)
        return SimpleNamespace(poll=lambda: None, stop=lambda: None)


JOB = SimpleNamespace(set_id=7, info=SimpleNamespace(mem_limit=350_000_000, camera="te", night="n"))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """combine/dask_executor.py's monotonic clock, under the test's hand."""
    fake = Clock()
    monkeypatch.setattr(cluster.time, "monotonic", fake)
    return fake


def test_a_waiting_combine_is_reported_after_wait_seconds_then_every_repeat(clock: Clock) -> None:
    """Without fallback_local: told at WAIT_SECONDS, again only after REPEAT_SECONDS."""
    executor = Executor()
    combine = cluster.DaskCombine(executor, JOB, lambda: None)  # type: ignore[arg-type]
    clock.now += WAIT_SECONDS - 0.1
    combine.poll()
    assert executor.warnings == []
    clock.now += 0.1
    combine.poll()
    assert [(w["when"], w["set"], w["waited"]) for w in executor.warnings] == [
        ("waiting", 7, WAIT_SECONDS)
    ]
    for _ in range(int(REPEAT_SECONDS // WAIT_SECONDS) - 1):
        clock.now += WAIT_SECONDS
        combine.poll()
    assert len(executor.warnings) == 1
    clock.now += WAIT_SECONDS
    combine.poll()
    assert len(executor.warnings) == 2
    assert executor.started_here == [] and executor._client.cancelled == []


def test_a_combine_some_worker_can_take_is_not_reported(clock: Clock) -> None:
    """A worker offering the MEMORY exists: the combine is only queued, nothing is said."""
    executor = Executor(capable=1, fallback_local=True)
    combine = cluster.DaskCombine(executor, JOB, lambda: None)  # type: ignore[arg-type]
    for _ in range(10):
        clock.now += WAIT_SECONDS
        combine.poll()
    assert executor.warnings == [] and executor.started_here == []


def test_fallback_waits_for_a_free_local_slot(clock: Clock) -> None:
    """fallback_local with this machine's slots full: it waits, and runs here once one frees."""
    executor = Executor(fallback_local=True, local_running=1)
    combine = cluster.DaskCombine(executor, JOB, lambda: None)  # type: ignore[arg-type]
    clock.now += WAIT_SECONDS
    combine.poll()
    assert executor.started_here == [] and len(executor.warnings) == 1
    executor.local_running = 0
    clock.now += WAIT_SECONDS
    combine.poll()
    assert executor.started_here == [7] and len(executor.warnings) == 1
    assert len(executor._client.cancelled) == 1  # the cluster's task no longer waits
    combine.stop()
    assert executor.local_running == 0  # its slot is given back
