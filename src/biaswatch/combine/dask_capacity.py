"""How the service reaches the Dask cluster safely, and what the cluster can run.

A combine asks for the worker resource ``MEMORY`` = ``[service] mem_limit``
(combine/dask_tasks.py). A worker started the ordinary way (``dask worker ADDRESS``, without
``--resources MEMORY=<bytes>``) offers no such resource, and the scheduler then
holds the task forever without a word (issue 11, finding 13). This module asks
the scheduler which workers could take it, so the service can say so, with the
exact flag to add, and fall back to this machine when ``fallback_local`` allows.

It also connects to the scheduler, with Dask's TLS settings
(``distributed.security.Security``) from the ``[service] tls_*`` files for a
``scheduler = "tls://..."``: without TLS anyone who reaches the scheduler runs
code as the service's user on every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from biaswatch.combine.dask_tasks import MEMORY
from biaswatch.config import ServiceConfig
from biaswatch.errors import SchedulerUnreachable

# The first connection may take this long: the scheduler answers a handshake within
# milliseconds on a LAN; 10 s also covers one that is just starting (its own startup
# is ~2 s, measured with `dask scheduler` here).
CONNECT_SECONDS = 10.0
# A combine still waiting this long with no worker able to take it is reported (and
# run here with fallback_local). The scheduler hands a task to a free worker with the
# resource within milliseconds (one message on the LAN), and a worker started beside
# the service offers its resources about 1 s after its command starts (`dask worker`
# measured here: 0.85-1.01 s in 3 runs, 2 busy cores); 10 s is ten times that, so a
# cluster still coming up is not blamed, while a combine no worker can take is told
# within seconds instead of waiting forever.
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


def connect(address: str, timeout: float = CONNECT_SECONDS, security: Any = None) -> Any:
    """A distributed.Client of the scheduler at ``address``; SchedulerUnreachable if none.

    Typed ``Any``: distributed's Client methods carry no annotations.
    """
    from distributed import Client

    try:
        return Client(  # type: ignore[no-untyped-call]
            address, timeout=timeout, set_as_default=False, security=security
        )
    except Exception as exc:  # the connection's one boundary: a reason, never a traceback
        # A TLS mismatch is an OSError ("TLS certificate does not match"); a tcp://
        # client at a TLS scheduler fails an assertion in distributed's handshake.
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s: "
            f"{type(exc).__name__}: {exc}{_tls_hint(address, exc)}"
        ) from exc


def _tls_hint(address: str, exc: Exception) -> str:
    if "TLS" in str(exc) or "SSL" in str(exc):
        return (
            " (check [service] tls_ca_file, tls_cert_file and tls_key_file: the CA must "
            "be the one that signed the scheduler's certificate, and the scheduler's the "
            "one that signed this service's)"
        )
    # Plain TCP at a TLS scheduler: it drops the connection at the first bytes, which
    # the client sees as a closed comm (or, later in the handshake, a failed assertion).
    closed = isinstance(exc, AssertionError) or type(exc).__name__ == "CommClosedError"
    if closed and not address.startswith("tls://"):
        return (
            " (the scheduler closed the connection at once: one that requires TLS "
            'answers only scheduler = "tls://...")'
        )
    return ""
