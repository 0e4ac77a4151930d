"""executor = "dask" on an install without the [dask] extra: one line and exit 78, as run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from biaswatch.combine.dask_extra import DASK_MISSING
from biaswatch.testing.helpers import free_port, write_config

# The command line with distributed made unimportable the import system's own way (a
# None in sys.modules), as on an install of plain `biaswatch` without the extra.
WITHOUT_DISTRIBUTED = (
    "import runpy, sys\n"
    "sys.modules['distributed'] = None\n"
    "sys.argv = ['biaswatch', *sys.argv[1:]]\n"
    "runpy.run_module('biaswatch', run_name='__main__', alter_sys=True)\n"
)


def without_distributed(
    *args: str | Path, code: str = WITHOUT_DISTRIBUTED
) -> subprocess.CompletedProcess[str]:
    """``biaswatch ARGS`` in a child process that cannot import distributed (through ``code``)."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def dask_config(tmp_path: Path) -> Path:
    """A valid config choosing the Dask executor, its scheduler a port nothing listens on."""
    scheduler = f"tcp://127.0.0.1:{free_port()}"
    return write_config(tmp_path, service={"executor": "dask", "scheduler": scheduler})


def test_check_config_says_the_extra_is_missing_in_one_line(tmp_path: Path) -> None:
    """check-config exits 78 with one stderr line naming the pip command, no traceback."""
    result = without_distributed("check-config", "--config", dask_config(tmp_path))
    assert result.returncode == 78, result.stderr
    assert result.stderr == f"biaswatch: {DASK_MISSING}\n"
    assert result.stdout == ""


def test_check_config_passes_where_distributed_is_installed(tmp_path: Path) -> None:
    """The same config and wrapper, distributed left importable: check-config exits 0."""
    code = WITHOUT_DISTRIBUTED.replace("sys.modules['distributed'] = None\n", "")
    result = without_distributed("check-config", "--config", dask_config(tmp_path), code=code)
    assert result.returncode == 0, result.stderr
    assert 'executor = "dask"' in result.stdout


def test_the_service_refuses_to_start_in_one_line_and_logs_why(tmp_path: Path) -> None:
    """run exits 78 (systemd does not restart) with the one line, logged as service.cannot_start."""
    result = without_distributed("run", "--config", dask_config(tmp_path))
    assert result.returncode == 78, result.stderr
    assert result.stderr == f"biaswatch: {DASK_MISSING}\n"
    log = (tmp_path / "log" / "biaswatch.jsonl").read_text(encoding="utf-8")
    assert '"service.cannot_start"' in log
    assert "biaswatch[dask]" in log
