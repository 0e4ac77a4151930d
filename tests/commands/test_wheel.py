"""The package as an index gets it: sdist and wheel built, checked, the wheel run from a fresh venv.

No network: the wheel is built in this venv (build --no-isolation, its setuptools
from the test extra) and installed with --no-deps --no-index; the fresh venv sees
the test venv's site-packages (the constrained dependencies) through a .pth file
appended after its own, so it runs the wheel's biaswatch with the tested libraries.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import biaswatch

REPO = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A child process without PYTHONPATH (so no checkout's src/ wins), output as text."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from this checkout, as `python -m build` does (~8 s)."""
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


def wheel_in(dist: Path) -> Path:
    """The one wheel in ``dist``."""
    (wheel,) = dist.glob("biaswatch-*.whl")
    return wheel


def test_the_sdist_and_the_wheel_pass_twine_check(dist: Path) -> None:
    """twine check --strict passes both files: the metadata and README render as an index needs."""
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"]
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2


def test_the_wheel_carries_the_licence_one_version_and_the_kernel(dist: Path) -> None:
    """The wheel holds LICENSE, the compiled kernel and py.typed; its version is __version__."""
    with zipfile.ZipFile(wheel_in(dist)) as wheel:
        names = wheel.namelist()
        info = f"biaswatch-{biaswatch.__version__}.dist-info"
        metadata = HeaderParser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert f"{info}/licenses/LICENSE" in names
    assert any(n.startswith("biaswatch/combine/_kernel.") and n.endswith(".so") for n in names)
    assert "biaswatch/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    assert metadata["Version"] == biaswatch.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    # distributed only with the [dask] extra: a plain install does not pull it.
    needs = metadata.get_all("Requires-Dist") or []
    assert [r for r in needs if r.startswith("distributed")] == [
        'distributed>=2026.8; extra == "dask"'
    ]


def test_the_wheel_runs_from_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    """Installed in a new venv, the wheel's biaswatch prints its version and combines frames."""
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(
        *(sys.executable, "-m", "pip", "--python", python, "install"),
        *("--no-deps", "--no-index", "--quiet", wheel_in(dist)),
    )
    assert installed.returncode == 0, installed.stderr
    (own,) = run(python, "-c", "import site; print(site.getsitepackages()[0])").stdout.split()
    # The dependencies: appended after the venv's own site-packages, never before it.
    (Path(own) / "tested_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    version = run(venv / "bin" / "biaswatch", "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"biaswatch {biaswatch.__version__}\n")
    where = run(python, "-c", "import biaswatch; print(biaswatch.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    frames = [tmp_path / f"cal{i}.fits" for i in range(3)]
    for i, frame in enumerate(frames):
        fits.writeto(frame, np.full((8, 8), float(i), np.float32))
    master = tmp_path / "master.fits"
    combined = run(
        *(venv / "bin" / "biaswatch", "combine", "--calibrated", "-o", master, *frames),
        cwd=tmp_path,
    )
    assert combined.returncode == 0, combined.stderr
    assert fits.getdata(master).shape == (8, 8)  # the wheel's compiled kernel ran
