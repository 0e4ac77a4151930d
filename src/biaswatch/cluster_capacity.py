"""What the Dask cluster can run, and how the service reaches it safely.

A combine asks for the worker resource ``MEMORY`` = ``[service] mem_limit``
(tasks.py). A worker started the ordinary way (``dask worker ADDRESS``, without
``--resources MEMORY=<bytes>``) offers no such resource, and the scheduler then
holds the task forever without a word (issue 11, finding 13). This module asks
the scheduler which workers could take it, so the service can say so, with the
exact flag to add, and fall back to this machine when ``fallback_local`` allows.

It also builds Dask's TLS settings (``distributed.security.Security``) from the
``[service] tls_*`` files, for a ``scheduler = "tls://..."``: without TLS anyone
who reaches the scheduler runs code as the service's user on every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from biaswatch.config import ServiceConfig
from biaswatch.tasks import MEMORY

# A combine still waiting this long with no worker able to take it is reported (and
# run here with fallback_local). The scheduler hands a task to a free worker with the
# resource within milliseconds (one message on the LAN), and a worker started beside
# the service registers about 2 s after its command starts (`dask worker` measured
# here, as for cluster.CONNECT_SECONDS); 10 s is five times that, so a cluster that is
# still coming up is not blamed, while an unrunnable combine is told within seconds of
# the minutes it would otherwise wait.
WAIT_SECONDS = 10.0
# Without fallback_local the combine keeps waiting (a capable worker may join): the
# warning is repeated this often while no worker can take it, so the journal keeps
# saying why no master comes, without a line every turn of the main loop.
REPEAT_SECONDS = 600.0
# The scheduler's worker list is asked for at most this often: every waiting combine
# checks it, and one answer serves them all (it changes only when workers come or go).
CACHE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Capacity:
    """The workers connected now, and how many offer the MEMORY a combine needs."""

    workers: int
    capable: int
    largest: float  # the largest MEMORY any worker offers (0: none offers it)


def capacity(client: Any, need: int) -> Capacity:
    """Ask the scheduler which of its workers offer at least ``need`` bytes of MEMORY."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    offers = [float((w.get("resources") or {}).get(MEMORY, 0)) for w in workers]
    return Capacity(len(offers), sum(o >= need for o in offers), max(offers, default=0.0))


def resources_flag(need: int) -> str:
    """The `dask worker` option that lets a worker take combines of ``need`` bytes."""
    return f"--resources {MEMORY}={need}"


def no_capable_worker_action(address: str, need: int, fallback: bool) -> str:
    """What to do when no worker offers the MEMORY a combine needs."""
    start = (
        f"start the workers with `dask worker {address} {resources_flag(need)}` "
        "(at least [service] mem_limit in bytes; systemd/biaswatch-dask-worker.service "
        "sets BIASWATCH_MEMORY)"
    )
    if fallback:
        return start + f"; meanwhile a combine waiting {WAIT_SECONDS:g} s runs on this machine"
    return start + "; until then the combine waits (fallback_local = true would run it here)"


def security_for(service: ServiceConfig) -> Any:
    """Dask's TLS settings for a ``tls://`` scheduler; None for any other address.

    Typed ``Any``: distributed's Security carries no annotations.
    """
    if service.scheduler is None or not service.scheduler.startswith("tls://"):
        return None
    from distributed.security import Security

    def text(path: object) -> str | None:
        return None if path is None else str(path)

    return Security(  # type: ignore[no-untyped-call]
        tls_ca_file=text(service.tls_ca_file),
        tls_client_cert=text(service.tls_cert_file),
        tls_client_key=text(service.tls_key_file),
        require_encryption=True,
    )
