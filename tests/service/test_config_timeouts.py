"""Config checks against a dead mount: a hanging realpath is given up after its timeout.

A thread that sleeps stands in for the hung call (the service tier: it waits on a timer).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def test_a_path_that_does_not_answer_is_compared_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A realpath that hangs (a dead mount) gives the normalized path after the timeout."""
    from biaswatch.system import overlaps

    def hang(path: Path, found: dict[Path, Path]) -> None:
        time.sleep(5)

    monkeypatch.setattr(overlaps, "_resolve_into", hang)
    start = time.monotonic()
    resolved = overlaps.resolve_all([Path("/a/b/../c")], seconds=0.2)
    assert resolved == {Path("/a/b/../c"): Path("/a/c")}
    assert time.monotonic() - start < 2


def test_a_forked_resolve_that_does_not_answer_is_compared_as_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """resolve_in_children gives the normalized path when its child is silent past the timeout."""
    from biaswatch.system import overlaps

    def hang(path: Path) -> str:
        time.sleep(30)
        return str(path)

    monkeypatch.setattr(overlaps, "_realpath", hang)  # the forked child inherits it
    start = time.monotonic()
    resolved = overlaps.resolve_in_children([Path("/a/b/../c")], seconds=0.2)
    assert resolved == {Path("/a/b/../c"): Path("/a/c")}
    assert time.monotonic() - start < 2


def test_a_forked_resolve_follows_symlinks(tmp_path: Path) -> None:
    """resolve_in_children gives a symlink's target, as realpath does, once its child answers."""
    from biaswatch.system import overlaps

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    resolved = overlaps.resolve_in_children([tmp_path / "link", tmp_path / "real"])
    assert resolved == {tmp_path / "link": tmp_path / "real", tmp_path / "real": tmp_path / "real"}
