"""Whether the ``[dask]`` extra is installed, asked before the Dask executor is built.

``distributed`` is an optional dependency (``pip install 'biaswatch[dask]'``): a
single-machine install has no use for it, nor for the dask, tornado, msgpack and
click it brings. A config with ``executor = "dask"`` on an install without it is
an install problem, told in one line with the command that mends it, before any
Dask import could end in a traceback.

Cheap on purpose (the standard library and errors.py only): ``check-config`` imports it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from biaswatch.errors import MissingExtra

if TYPE_CHECKING:  # a type only: importing config (pydantic) here would undo "cheap"
    from biaswatch.config import ServiceConfig

DASK_MISSING = "executor = \"dask\" needs biaswatch[dask]: pip install 'biaswatch[dask]'"


def require_dask_extra(service: ServiceConfig) -> None:
    """Return if the configured executor's packages are importable; MissingExtra if not."""
    if service.executor == "dask" and not dask_installed():
        raise MissingExtra(DASK_MISSING)


def dask_installed() -> bool:
    """Whether ``distributed`` can be imported, found without importing it (~1 s)."""
    try:
        # None also when sys.modules["distributed"] is None: the import system's
        # own way of marking a module as unimportable (what the tests use).
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False
