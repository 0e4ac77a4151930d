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

# Each would cost a command or a combine child a noticeable part of a second (-X
# importtime here: matplotlib.figure 0.25 s, ccdproc 0.43 s) and none is used there.
HEAVY = ("matplotlib", "ccdproc", "scipy", "tqdm", "distributed")
# What the fork server imports before it forks combine children (combine/child.py:
# set_forkserver_preload), then what each child runs first: multiprocessing's
# main-module preparation runs the installed `biaswatch` script, which imports cli.main.
CHILD_ENTRY = ("multiprocessing.forkserver", "biaswatch.combine.preload", "biaswatch.cli.main")


@functools.cache  # one interpreter for the child tests: the preload takes ~0.6 s
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

    scipy not at all: only numba brought it (its BLAS bindings), and the kernel is no
    longer numba's (issue 14).
    """
    modules = loaded_after(*CHILD_ENTRY)
    assert loaded_packages(modules, HEAVY) == []
    # What a combine does need: the compiled kernel, numpy and astropy's FITS reader.
    assert {"numpy", "astropy.io.fits", "biaswatch.combine._kernel"} <= modules


def test_the_service_and_the_api_load_plotting_and_dask_only_when_used() -> None:
    """Importing the service loop and the Python API loads neither matplotlib nor distributed.

    matplotlib is loaded where a figure is drawn (publish/figure.py, publish/report.py),
    distributed where the Dask executor connects (combine/dask_capacity.py): an install
    without the [dask] extra must get as far as the one-line refusal (combine/dask_extra.py).
    """
    modules = loaded_after("biaswatch.service.loop", "biaswatch.calibrations")
    assert loaded_packages(modules, ("matplotlib", "distributed", "dask")) == []
    assert "biaswatch.combine.factory" in modules  # the check above saw the executor's module


def test_the_combine_child_loads_no_numba_or_llvmlite() -> None:
    """The combine child's entry loads neither numba nor llvmlite: the kernel is compiled C."""
    modules = loaded_after(*CHILD_ENTRY)
    assert loaded_packages(modules, ("numba", "llvmlite")) == []


def test_the_combine_child_loads_no_catalog() -> None:
    """The combine child imports neither SQLite nor the catalog: the parent records masters."""
    modules = loaded_after(*CHILD_ENTRY)
    assert loaded_packages(modules, ("sqlite3", "biaswatch.catalog")) == []


# What `biaswatch combine --calibrated` must not load (issue 14): the raw frames' ingest
# (ccdproc, and astropy's nddata, modeling, wcs and coordinates that it brings), the
# plotting and the service's catalog side beyond publish.master. astropy.units does load:
# astropy.io.fits imports it (astropy/utils/data.py), and the master file needs io.fits.
CALIBRATED_UNWANTED = (
    *HEAVY,
    "astropy.nddata",
    "astropy.modeling",
    "astropy.wcs",
    "astropy.coordinates",
    "biaswatch.frames",
    "biaswatch.service",
)


def test_the_calibrated_combine_command_loads_no_ingest_or_plotting(tmp_path: Path) -> None:
    """`biaswatch combine --calibrated` on three tiny frames loads no ccdproc, nddata or frames/.

    Run as a user runs it, in a fresh interpreter, so imports made inside functions count.
    """
    import numpy as np
    from astropy.io import fits

    frames = []
    for i in range(3):
        frames.append(str(tmp_path / f"cal{i}.fits"))
        fits.writeto(frames[-1], np.full((8, 8), float(i), np.float32))
    code = (
        "import json, sys\n"
        "from biaswatch.cli.main import main\n"
        f"args = ['combine', '--calibrated', '-o', {str(tmp_path / 'm.fits')!r}, *{frames!r}]\n"
        "status = main(args)\n"
        "print(json.dumps([status, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    status, names = json.loads(result.stdout.splitlines()[-1])
    modules = frozenset(names)
    assert status == 0
    assert loaded_packages(modules, CALIBRATED_UNWANTED) == []
    assert {"numpy", "astropy.io.fits", "biaswatch.combine.engine"} <= modules


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


def import_cycles(package: str) -> list[list[str]]:
    """Groups of the package's modules that import each other, directly or in a ring.

    Counted with grimp (import-linter's graph): imports inside functions and under
    ``TYPE_CHECKING`` included, since either one can make a ring that bites at run time
    or in the type checker. Tarjan's strongly connected components, of size > 1.
    """
    import grimp  # the test extra's, through import-linter

    graph = grimp.build_graph(package, exclude_type_checking_imports=False)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    rings: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            ring = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(ring) > 1:
                rings.append(sorted(ring))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return rings


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle among biaswatch's modules, counting imports inside functions."""
    assert import_cycles("biaswatch") == []


def test_the_cycle_finder_sees_a_ring(tmp_path: Path) -> None:
    """A two-module ring in a scratch package is reported, so the check above can fail."""
    package = tmp_path / "ringpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from ringpkg import b\n")
    (package / "b.py").write_text("from ringpkg import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert import_cycles("ringpkg") == [["ringpkg.a", "ringpkg.b"]]
    finally:
        sys.path.remove(str(tmp_path))
