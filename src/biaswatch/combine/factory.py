"""The executor the configuration chooses: local children, or a Dask cluster.

Apart from executors.py (the interface and the local executor) because it names
both kinds: dask_executor.py builds on executors.py, so executors.py choosing the
Dask executor itself was an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from biaswatch.combine.dask_executor import DaskExecutor
from biaswatch.combine.dask_extra import require_dask_extra
from biaswatch.combine.executors import CombineExecutor, LocalExecutor
from biaswatch.config import ServiceConfig
from biaswatch.errors import SchedulerUnreachable

# The logger name executors.py used, kept so the "executor.fallback" event reads as before.
log = structlog.get_logger(__name__)


def make_executor(service: ServiceConfig, wake: Callable[[], None]) -> CombineExecutor:
    """The configured executor; SchedulerUnreachable unless fallback_local allows local.

    MissingExtra (exit 78) when the Dask executor is asked for and distributed is not
    installed: fallback_local covers a scheduler that is down, not a broken install.
    """
    require_dask_extra(service)
    if service.executor == "local" or service.scheduler is None:
        return LocalExecutor(service.combine_slots)
    try:
        return DaskExecutor(service, wake)
    except SchedulerUnreachable as exc:
        if not service.fallback_local:
            raise
        log.warning(
            "executor.fallback",
            scheduler=service.scheduler,
            reason=str(exc),
            action="combining on this machine (fallback_local = true); restart the "
            "service to use the cluster once its scheduler is up",
        )
        return LocalExecutor(service.combine_slots)
