"""What loads with the command line and with the combine child: a fresh interpreter each.

A subprocess is the only honest view of a clean ``sys.modules`` (this test process
has imported half the package already). The import contracts in .importlinter
check our own imports statically; these tests see every import at run time,
third-party ones included.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each would cost a command or a combine child a noticeable part of a second (-X
# importtime here: matplotlib.figure 0.25 s, ccdproc 0.43 s) and none is used there.
HEAVY = ("matplotlib", "ccdproc", "scipy", "tqdm", "distributed")
# What the fork server imports before it forks combine children (combine/child.py:
# set_forkserver_preload), then what each child runs first: multiprocessing's
# main-module preparation runs the installed `biaswatch` script, which imports cli.main.
CHILD_ENTRY = ("multiprocessing.forkserver", "biaswatch.combine.preload", "biaswatch.cli.main")


@functools.cache  # one interpreter for both child tests: the kernel load takes ~2 s
def loaded_after(*modules: str) -> frozenset[str]:
    """The names in sys.modules of a fresh interpreter once it has imported ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=os.environ.copy(),
    )
    return frozenset(json.loads(result.stdout.splitlines()[-1]))


def loaded_packages(modules: frozenset[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (or any module inside one) are among ``modules``."""
    return sorted(p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules))


def test_the_command_line_loads_no_heavy_library() -> None:
    """Importing biaswatch.cli.main loads no heavy library, no numpy and no catalog."""
    modules = loaded_after("biaswatch.cli.main")
    unwanted = (*HEAVY, "numpy", "astropy", "numba", "sqlite3", "biaswatch.catalog")
    assert loaded_packages(modules, unwanted) == []
    commands = {m for m in modules if m.startswith("biaswatch.cli.")}
    assert commands == {"biaswatch.cli.main", "biaswatch.cli.common", "biaswatch.cli.options"}


def test_the_combine_child_loads_no_plotting_ccdproc_tqdm_or_dask() -> None:
    """The fork server's preload plus the child's main script load none of the heavy libraries.

    scipy only as far as numba takes it: numba/__init__.py (_ensure_critical_deps)
    imports the package to check its version, and loading the compiled kernel
    imports scipy.linalg's BLAS bindings (numba/np/linalg.py ensure_blas, through
    numba/core/cpu.py load_additional_registries). No other scipy subpackage
    (ndimage, stats, signal, ... as ccdproc and astropy's nddata bring) may load.
    """
    modules = loaded_after(*CHILD_ENTRY)
    assert loaded_packages(modules, tuple(h for h in HEAVY if h != "scipy")) == []
    scipy_parts = {".".join(m.split(".")[:2]) for m in modules if m.startswith("scipy.")}
    numbas_own = {"scipy.linalg", "scipy.version", "scipy.__config__"}
    assert sorted(p for p in scipy_parts - numbas_own if not p.startswith("scipy._")) == []
    assert {"numpy", "astropy.io.fits", "numba"} <= modules  # what a combine does need


@pytest.mark.xfail(
    strict=True, reason="removed by the publishing split: child.py imports publish.master"
)
def test_the_combine_child_loads_no_catalog() -> None:
    """The combine child imports neither SQLite nor the catalog: the parent records masters."""
    modules = loaded_after(*CHILD_ENTRY)
    assert loaded_packages(modules, ("sqlite3", "biaswatch.catalog")) == []


def test_a_child_of_the_installed_script_does_not_run_the_script_again(tmp_path: Path) -> None:
    """A script that runs cli.main is named biaswatch.__main__, so children skip re-running it."""
    # The installed console script as pip writes it (from ... import main; main()),
    # then what multiprocessing would send a child to prepare (spawn.get_preparation_data).
    script = tmp_path / "biaswatch"
    script.write_text(
        "import contextlib, json\n"
        "from multiprocessing import spawn\n"
        "from biaswatch.cli.main import main\n"
        "with contextlib.suppress(SystemExit):\n"
        "    main(['--version'])\n"
        "data = spawn.get_preparation_data('combine')\n"
        "print(json.dumps({k: v for k, v in data.items() if k.startswith('init_main')}))\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=60
    )
    sent = json.loads(result.stdout.splitlines()[-1])  # after the --version line
    assert sent == {"init_main_from_name": "biaswatch.__main__"}
