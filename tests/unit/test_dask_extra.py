"""The [dask] extra: asked for by the config, looked for without importing distributed."""

from __future__ import annotations

import sys

import pytest

from biaswatch.combine.dask_extra import DASK_MISSING, dask_installed, require_dask_extra
from biaswatch.config import ServiceConfig
from biaswatch.errors import ConfigError, MissingExtra

DASK = ServiceConfig(executor="dask", scheduler="tcp://head:8786")


def test_the_dask_executor_without_distributed_is_one_config_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With distributed unimportable, executor = "dask" raises MissingExtra naming the extra."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # type: ignore[arg-type]
    with pytest.raises(MissingExtra) as raised:
        require_dask_extra(DASK)
    assert isinstance(raised.value, ConfigError)  # so `run` exits 78 (no restart loop)
    assert raised.value.problems == [DASK_MISSING]
    assert "pip install 'biaswatch[dask]'" in DASK_MISSING


def test_the_local_executor_needs_no_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    """executor = "local" passes the check even with distributed unimportable."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # type: ignore[arg-type]
    require_dask_extra(ServiceConfig())
    assert not dask_installed()


def test_an_installed_distributed_passes_the_check() -> None:
    """With the test install's distributed, executor = "dask" passes and dask_installed is true."""
    require_dask_extra(DASK)
    assert dask_installed()
