"""`biaswatch run` on an incomplete TLS config: exit 78 at start, no traceback (no cluster)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from biaswatch.testing.helpers import run_cli, write_config


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    """`biaswatch run` that is expected to stop at start."""
    return run_cli("run", "--config", config, timeout=120)


def test_run_with_an_incomplete_tls_config_exits_78(tmp_path: Path) -> None:
    """`biaswatch run` with tls:// but no certificates exits 78 with the message, no traceback."""
    config = write_config(tmp_path, service={"executor": "dask", "scheduler": "tls://head:8786"})
    result = run_once(config)
    assert result.returncode == 78
    assert "tls_ca_file" in result.stderr and "Traceback" not in result.stderr
