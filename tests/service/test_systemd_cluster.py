"""The Dask units' commands run as written, outside systemd: a real scheduler and workers."""

from __future__ import annotations

import operator
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemd_units import (
    CONFIG,
    SCHEDULER_UNIT,
    WORKER_UNIT,
    current_dask,
    environment,
    expand,
    parse_unit,
    with_option,
)

from biaswatch.config import load_config
from biaswatch.testing.helpers import free_port


class _Started:
    """Processes started from the units' commands, stopped (SIGTERM, then SIGKILL) at exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.processes.append((process, log))

    def stop(self) -> None:
        for process, log in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)
            # Shown by pytest only when the test fails.
            print(f"--- {log.name}\n" + log.read_text(encoding="utf-8", errors="replace")[-4000:])


@pytest.fixture
def started(tmp_path: Path) -> Iterator[_Started]:
    """Start processes for a test and stop every one of them afterwards."""
    processes = _Started(tmp_path)
    try:
        yield processes
    finally:
        processes.stop()


def test_unit_commands_make_a_cluster_that_runs_a_combine_sized_task(
    tmp_path: Path,
    started: _Started,
) -> None:
    """The units' commands, run as written (ports moved), make workers that take the combines."""
    scheduler_unit = parse_unit(SCHEDULER_UNIT.read_text(encoding="utf-8"))
    worker_unit = parse_unit(WORKER_UNIT.read_text(encoding="utf-8"))
    distributed = pytest.importorskip("distributed")
    port = free_port()
    scheduler = shlex.split(scheduler_unit["Service"]["ExecStart"][0])
    scheduler = with_option(scheduler, "--port", str(port))
    scheduler = with_option(scheduler, "--dashboard-address", f"127.0.0.1:{free_port()}")
    defaults = environment(worker_unit["Service"]["Environment"])
    variables = {**defaults, "BIASWATCH_SCHEDULER": f"tcp://127.0.0.1:{port}"}
    worker = [
        expand(word, variables) for word in shlex.split(worker_unit["Service"]["ExecStart"][0])
    ]
    # Dask's scratch space (default /tmp/dask-scratch-space) goes to tmp_path.
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(tmp_path)}

    started.start("scheduler", [*current_dask(), *scheduler[1:], "--host", "127.0.0.1"], env)
    started.start("worker", [*current_dask(), *worker[1:]], env)

    nworkers = int(defaults["BIASWATCH_NWORKERS"])
    with distributed.Client(f"tcp://127.0.0.1:{port}", timeout=30) as client:
        client.wait_for_workers(nworkers, timeout=90)
        workers = list(client.scheduler_info()["workers"].values())
        assert len(workers) == nworkers
        for info in workers:
            assert info["nthreads"] == 1
            assert info["resources"] == {"MEMORY": float(defaults["BIASWATCH_MEMORY"])}
            assert info["memory_limit"] == int(defaults["BIASWATCH_MEMORY_LIMIT"])
        # A task asking for MEMORY = the example config's mem_limit, as each combine does.
        mem_limit = load_config(CONFIG).service.mem_limit
        task = client.submit(operator.add, 1, 2, resources={"MEMORY": mem_limit}, pure=False)
        assert task.result(timeout=60) == 3
