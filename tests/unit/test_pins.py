"""The install pins: constraints.txt pins what was tested, lower-bounds.txt the declared floors."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def load_pins() -> ModuleType:
    """The .ci/pins script as a module (it has no .py suffix: a command, not a library)."""
    loader = SourceFileLoader("ci_pins", str(ROOT / ".ci" / "pins"))
    spec = importlib.util.spec_from_loader("ci_pins", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


PINS = load_pins()


def constraints() -> dict[str, str]:
    """constraints.txt as canonical name -> pinned version."""
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(pair) == 2 for pair in pairs), "every line is name==version"
    return {PINS.canonical(name): version for name, version in pairs}


def test_lower_bounds_txt_is_what_pyproject_declares() -> None:
    """lower-bounds.txt is exactly what .ci/pins generates from pyproject.toml's floors."""
    assert (ROOT / "lower-bounds.txt").read_text(encoding="utf-8") == PINS.lower_bounds_text()


def test_every_declared_dependency_is_pinned_at_or_above_its_floor() -> None:
    """Each dependency and extra in pyproject.toml has one pin in constraints.txt, >= its floor."""
    pinned = constraints()
    for name, floor in PINS.floors(PINS.declared()).items():
        assert name in pinned, f"{name} is not in constraints.txt: run .ci/pins constraints"
        assert Version(pinned[name]) >= Version(floor), f"{name}: pin below the floor {floor}"


def test_the_constraints_leave_out_biaswatch_and_pip() -> None:
    """constraints.txt pins neither biaswatch itself nor pip (make setup upgrades pip)."""
    assert not {"biaswatch", "pip"} & set(constraints())


def test_this_venv_has_each_declared_dependency_at_its_pin() -> None:
    """The venv running the tests holds the pinned version of every declared dependency."""
    pinned = constraints()
    for name in PINS.floors(PINS.declared()):
        installed = importlib.metadata.version(name)
        assert Version(installed) == Version(pinned[name]), f"{name} {installed} is not pinned"


def test_a_requirement_without_a_floor_is_refused() -> None:
    """A dependency declared with no >= floor stops .ci/pins: its lower bound would be untested."""
    with pytest.raises(SystemExit, match="no >= floor"):
        PINS.floors(["numpy<3"])
    assert PINS.floors(["apscheduler>=3.10,<4", "Import_Linter >= 2.17"]) == {
        "apscheduler": "3.10",
        "import-linter": "2.17",
    }
