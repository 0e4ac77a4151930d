"""The unit's Environment= for run-time caches, applied to the real service: a preview drawing
keeps matplotlib's font cache in the CacheDirectory=, and nothing lands in $HOME (which is the
state directory under the unit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from systemd_units import UNIT, environment, parse_unit

from biaswatch.testing.helpers import wait_until, write_config, write_frames
from biaswatch.testing.service import running_service


def unit_environment(cache_root: Path) -> dict[str, str]:
    """The unit's Environment= variables, %C (the cache root, systemd.unit(5)) expanded."""
    service = parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]
    return {
        k: v.replace("%C", str(cache_root)) for k, v in environment(service["Environment"]).items()
    }


def test_preview_keeps_its_font_cache_in_the_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the unit's Environment=, the font cache is in %C/biaswatch and $HOME stays empty."""
    cache_root, home = tmp_path / "cache", tmp_path / "home"
    (cache_root / "biaswatch").mkdir(parents=True)  # CacheDirectory= creates it
    home.mkdir()
    env = {**unit_environment(cache_root), "HOME": str(home)}
    for name in list(os.environ):  # as under systemd, which sets none of these
        if name.startswith(("XDG_", "MPL", "ASTROPY")):
            monkeypatch.delenv(name)
    config = write_config(tmp_path, expected_frames=3)
    with running_service(config, env=env) as service:
        write_frames(config, "cryo", 3, interval=0.0)
        service.wait_event("master.published", timeout=120)
        masters = tmp_path / "masters"
        wait_until(lambda: any(masters.rglob("*.png")), 60, "the preview")
        assert service.stop()[0] == 0

    assert list((cache_root / "biaswatch" / "matplotlib").glob("fontlist-*.json"))
    assert list(home.iterdir()) == []
    output = (tmp_path / "service-output.txt").read_text(errors="replace")
    assert "temporary cache directory" not in output
