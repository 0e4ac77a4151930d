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
