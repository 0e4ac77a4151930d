"""The real service under systemd's journal stream: each stdout line carries its priority."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biaswatch import journald
from biaswatch.testing.helpers import write_config
from biaswatch.testing.service import running_service


@pytest.mark.skipif(
    journald.SOCKET.exists(),
    reason="journald runs here: the service would send its events to the real journal",
)
def test_stdout_lines_carry_priority_prefixes(tmp_path: Path) -> None:
    """With log_file = "-" and JOURNAL_STREAM naming its stdout, lines start <6>{...}."""
    config = write_config(tmp_path, service={"log_file": "-"})
    output = tmp_path / "service-output.txt"  # the harness's stdout, opened for appending
    output.touch()
    status = output.stat()
    stream = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    with running_service(config, env=stream) as service:
        assert service.stop()[0] == 0
    lines = output.read_text().splitlines()
    events = {json.loads(line[3:])["event"]: line[:3] for line in lines if line[3:4] == "{"}
    assert events["service.started"] == "<6>"
    assert events["service.stopped"] == "<6>"
    assert all(line.startswith(("<3>", "<4>", "<6>", "<7>")) for line in lines), lines
