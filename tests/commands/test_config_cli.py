"""`biaswatch run` on a bad config: the exit status and message systemd and people see."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from biaswatch.testing.helpers import run_cli

MINIMAL = """
[cameras.cryo]
watch = ["incoming/cryo"]
"""


def test_cli_exits_78_with_the_problems(write_config: Callable[[str], Path]) -> None:
    """The run command exits with EX_CONFIG (78) and prints each problem."""
    path = write_config("[defaults]\nquiet_minuts = 5\n" + MINIMAL)
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 78
    assert "[defaults] quiet_minuts: unknown key; did you mean 'quiet_minutes'?" in result.stderr
