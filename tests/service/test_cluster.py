"""The real service on a real Dask cluster (distributed.LocalCluster, worker processes).

Masters made on the cluster, whole or split into row bands, must equal the
local executor's; a worker killed in the middle of a combine must still give
exactly one master, with the lost attempt in the catalog.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.combine.dask_capacity import WAIT_SECONDS
from biaswatch.combine.dask_executor import CONNECT_SECONDS
from biaswatch.sections import Section
from biaswatch.system.faults import PAUSE_AT, PAUSE_SECONDS
from biaswatch.testing.camera import Geometry
from biaswatch.testing.helpers import free_port, run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, masters_in, running_service

distributed = pytest.importorskip("distributed")


# 1024 x 1024 calibrated pixels: 10 frames are a 40 MB stack, and an 18 MB budget
# holds the 9.4 MB result (image 4, MASK 1 and UNCERT 4 bytes a pixel), the 4 MB
# runtime reserve (combine/engine.py) and ~100 rows of it, so the cluster must split
# it into bands while the local engine loops over them.
BIG = Geometry(
    rows=1024, cols=1056, biassec=Section(1025, 1056, 1, 1024), trimsec=Section(1, 1024, 1, 1024)
)
SMALL_BUDGET = 18_000_000


def start_cluster(
    workers: int, env: dict[str, str] | None = None, memory: int | None = 2_000_000_000
) -> distributed.LocalCluster:
    """A LocalCluster of worker processes, one thread each, with a combine budget (or none)."""
    os.environ.update(env or {})
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        resources=None if memory is None else {"MEMORY": memory},
        dashboard_address=":0",  # any free port: tests may run beside a real cluster
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Three worker processes, shared by the tests that do not kill any."""
    with start_cluster(3) as local:
        yield local


def raw_frames(tmp_path: Path) -> dict[str, list[Path]]:
    """One night's raw frames per camera, written once so both runs read the same bytes."""
    (tmp_path / "gen").mkdir()
    config = write_config(tmp_path / "gen")
    return {
        "cryo": write_frames(
            config, "cryo", 5, interval=0, geometry=BIG, out_dir=tmp_path / "raw/cryo"
        ),
        "te": write_frames(config, "te", 5, interval=0, out_dir=tmp_path / "raw/te"),
    }


def run_and_collect(base: Path, raws: dict[str, list[Path]], **service: object) -> dict[str, Path]:
    """Run the real service in ``base`` on copies of ``raws``; each camera's master."""
    base.mkdir()
    config = write_config(base, service={"mem_limit": SMALL_BUDGET, **service})
    masters: dict[str, Path] = {}
    with running_service(config) as process:
        for camera, paths in raws.items():
            for path in paths:
                shutil.copy(path, base / "incoming" / camera / path.name)
        for event in process.wait_event("master.published", count=2, timeout=180):
            masters[event["camera"]] = Path(event["path"])
        assert process.stop()[0] == 0
        calibrated = process.events("frame.calibrated")
    # The service's own log tells each frame's calibration, wherever it ran.
    assert len(calibrated) == sum(len(paths) for paths in raws.values())
    where = {event.get("on") for event in calibrated}
    assert where == ({"cluster"} if service.get("executor") == "dask" else {None})
    return masters


def same_master(a: Path, b: Path) -> None:
    """Equal pixels (image, MASK, UNCERT) byte for byte, equal cards but for the write time."""
    with fits.open(a) as first, fits.open(b) as second:
        assert [h.name for h in first] == [h.name for h in second] == ["PRIMARY", "MASK", "UNCERT"]
        for mine, theirs in zip(first, second, strict=True):
            assert mine.data.tobytes() == theirs.data.tobytes()
        # DATE is when the file was written, CHECKSUM covers DATE: all else must agree.
        skip = {"DATE", "CHECKSUM"}
        cards_a = [(c.keyword, c.value) for c in first[0].header.cards if c.keyword not in skip]
        cards_b = [(c.keyword, c.value) for c in second[0].header.cards if c.keyword not in skip]
        assert cards_a == cards_b


def test_cluster_masters_equal_the_local_executors(
    tmp_path: Path, cluster: distributed.LocalCluster
) -> None:
    """The same frames give the same masters on the cluster (whole and band-split) as locally."""
    raws = raw_frames(tmp_path)
    local = run_and_collect(tmp_path / "local", raws)
    dask = run_and_collect(
        tmp_path / "dask", raws, executor="dask", scheduler=cluster.scheduler_address
    )
    for camera in ("cryo", "te"):
        same_master(local[camera], dask[camera])
    config = tmp_path / "dask" / "config.toml"
    rows = catalog_rows(config, "SELECT * FROM attempts")
    runs = {(row["set_id"], row["task"]) for row in rows}
    assert len(rows) == len(runs), "each task of each set ran once: one attempt row each"
    tasks = {row["task"]: row for row in rows}
    # cryo's 40 MB stack was split into bands on several workers, te's was one task.
    bands = [name for name in tasks if name.startswith("band ")]
    assert len(bands) > 1 and "assemble" in tasks
    assert {row["outcome"] for row in tasks.values()} == {"done"}
    assert {row["executor"] for row in tasks.values()} == {"dask"}
    assert len({tasks[name]["worker"] for name in bands}) > 1  # spread over workers


def test_killing_a_worker_mid_combine_leaves_exactly_one_master(tmp_path: Path) -> None:
    """A worker SIGKILLed in the middle of a combine: the task reruns, one master results."""
    # 8 s: between the task's start and the kill lie an event, the service's main loop
    # and the test's catalog poll (0.1 s each when idle); the rest is margin for a
    # loaded CI machine, where a shorter pause could let the combine finish first.
    pause = {PAUSE_AT: "mid_combine", PAUSE_SECONDS: "8"}
    try:
        with start_cluster(2, env=pause) as local:
            config = write_config(
                tmp_path, service={"executor": "dask", "scheduler": local.scheduler_address}
            )
            with running_service(config) as process:
                write_frames(config, "te", 5, interval=0)
                wait_until(lambda: running_attempt(config) is not None, 120, "a running combine")
                killed = running_attempt(config)
                assert killed is not None
                os.kill(int(re.search(r"pid (\d+)", killed)[1]), signal.SIGKILL)  # type: ignore[index]
                (published,) = process.wait_event("master.published", timeout=120)
                assert process.stop()[0] == 0
    finally:
        for key in pause:
            os.environ.pop(key, None)
    masters = masters_in(tmp_path / "masters")
    assert masters == [Path(published["path"])]
    assert not [p for p in (tmp_path / "masters").rglob("*") if ".partial-" in p.name]
    assert len(catalog_rows(config, "SELECT * FROM masters")) == 1
    attempts = catalog_rows(config, "SELECT worker, outcome FROM attempts ORDER BY id")
    assert (attempts[0]["worker"], attempts[0]["outcome"]) == (killed, "lost")
    assert attempts[-1]["outcome"] == "done" and attempts[-1]["worker"] != killed
    assert fits.getheader(published["path"])["NCOMBINE"] == 5


def running_attempt(config: Path) -> str | None:
    """The worker of the combine attempt running now, if any."""
    rows = catalog_rows(config, "SELECT worker FROM attempts WHERE outcome = 'running'")
    return str(rows[0]["worker"]) if rows else None


def test_unreachable_scheduler_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    """With no scheduler at the address the service exits 69 and says what to do."""
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path, service={"executor": "dask", "scheduler": address})
    result = run_cli("run", "--config", config, timeout=120)
    assert result.returncode == 69
    assert address in result.stderr and "fallback_local" in result.stderr


def test_fallback_local_combines_on_this_machine(tmp_path: Path) -> None:
    """fallback_local = true: no scheduler, so combines run locally, with a warning."""
    address = f"tcp://127.0.0.1:{free_port()}"
    service = {"executor": "dask", "scheduler": address, "fallback_local": True}
    config = write_config(tmp_path, service=service)
    with running_service(config) as process:
        (warning,) = process.events("executor.fallback")
        write_frames(config, "te", 5, interval=0)
        (published,) = process.wait_event("master.published", timeout=120)
        assert process.stop()[0] == 0
    assert warning["scheduler"] == address
    (attempt,) = catalog_rows(config, "SELECT executor, outcome FROM attempts")
    assert (attempt["executor"], attempt["outcome"]) == ("local", "done")
    assert np.isfinite(fits.getdata(published["path"])).all()


def dask_command(*args: str) -> list[str]:
    """The `dask` command line of this interpreter's environment."""
    return [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]]


def test_a_lost_scheduler_is_waited_for_and_the_set_combined_once(tmp_path: Path) -> None:
    """Scheduler SIGKILLed mid-combine, then restarted (as systemd would): one master."""
    port, env = (
        free_port(),
        {
            **os.environ,
            PAUSE_AT: "mid_combine",
            PAUSE_SECONDS: "8",
        },
    )
    address = f"tcp://127.0.0.1:{port}"
    scheduler_args = (
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        ":0",
    )
    worker_args = (
        "worker",
        address,
        "--nthreads",
        "1",
        "--nworkers",
        "2",
        "--resources",
        "MEMORY=2e9",
        "--dashboard-address",
        ":0",
    )
    log = (tmp_path / "cluster.txt").open("wb")
    started = [subprocess.Popen(dask_command(*scheduler_args), env=env, stdout=log, stderr=log)]
    try:
        started.append(
            subprocess.Popen(dask_command(*worker_args), env=env, stdout=log, stderr=log)
        )
        config = write_config(tmp_path, service={"executor": "dask", "scheduler": address})
        with running_service(config) as process:
            write_frames(config, "te", 5, interval=0)
            wait_until(lambda: running_attempt(config) is not None, 120, "a running combine")
            first = running_attempt(config)
            started[0].kill()  # dask workers leave with their scheduler; systemd restarts both
            started[0].wait()
            process.wait_event("combine.lost", timeout=30)
            # Away longer than the client's own reconnect window (cluster.CONNECT_SECONDS):
            # it gives up and closes, so the service must connect a new client.
            process.wait_event("executor.disconnected", timeout=CONNECT_SECONDS + 20)
            started.append(
                subprocess.Popen(dask_command(*scheduler_args), env=env, stdout=log, stderr=log)
            )
            started.append(
                subprocess.Popen(dask_command(*worker_args), env=env, stdout=log, stderr=log)
            )
            (published,) = process.wait_event("master.published", timeout=120)
            assert process.events("combine.resubmitted")
            assert process.stop()[0] == 0
    finally:
        for proc in started:
            proc.terminate()
        for proc in started:
            proc.wait(timeout=30)
        log.close()
    masters = masters_in(tmp_path / "masters")
    assert masters == [Path(published["path"])]
    assert len(catalog_rows(config, "SELECT * FROM masters")) == 1
    attempts = catalog_rows(config, "SELECT worker, outcome FROM attempts ORDER BY id")
    assert (attempts[0]["worker"], attempts[0]["outcome"]) == (first, "lost")
    assert attempts[-1]["outcome"] == "done"
    (row,) = catalog_rows(config, "SELECT state, tries FROM sets WHERE camera = 'te'")
    assert (row["state"], row["tries"]) == ("done", 0)  # a lost scheduler is not a failed try


@pytest.fixture(scope="module")
def plain_cluster() -> Iterator[distributed.LocalCluster]:
    """One worker started the ordinary way: no --resources, so no MEMORY to offer."""
    with start_cluster(1, memory=None) as local:
        yield local


def test_workers_without_memory_are_reported_with_the_flag_to_add(
    tmp_path: Path, plain_cluster: distributed.LocalCluster
) -> None:
    """No worker offers MEMORY: executor.no_capable_worker at start and for the waiting set."""
    address = plain_cluster.scheduler_address
    config = write_config(tmp_path, service={"executor": "dask", "scheduler": address})
    flag = "--resources MEMORY=350000000"  # [service] mem_limit's default, in bytes
    with running_service(config) as process:
        (at_start,) = process.wait_event("executor.no_capable_worker", timeout=30)
        write_frames(config, "te", 5, interval=0)
        process.wait_event("combine.started", timeout=60)
        began = process.events("combine.started")[0]["timestamp"]
        _, waiting = process.wait_event("executor.no_capable_worker", 2, WAIT_SECONDS + 20)
        assert not process.events("master.published")  # it waits: nothing ran it
        assert process.stop()[0] == 0
    assert (at_start["when"], at_start["workers"], at_start["resources"]) == ("start", 1, flag)
    assert flag in at_start["action"] and address in at_start["action"]
    assert (waiting["when"], waiting["camera"], waiting["resources"]) == ("waiting", "te", flag)
    assert WAIT_SECONDS <= waiting["waited"] < WAIT_SECONDS + 5
    assert waiting["timestamp"] > began
    assert not catalog_rows(config, "SELECT * FROM attempts")  # no task ever started


def test_fallback_local_combines_here_what_no_worker_can_take(
    tmp_path: Path, plain_cluster: distributed.LocalCluster
) -> None:
    """fallback_local and no worker offering MEMORY: the waiting combine is made locally."""
    service = {
        "executor": "dask",
        "scheduler": plain_cluster.scheduler_address,
        "fallback_local": True,
    }
    config = write_config(tmp_path, service=service)
    with running_service(config) as process:
        write_frames(config, "te", 5, interval=0)
        (published,) = process.wait_event("master.published", timeout=WAIT_SECONDS + 60)
        assert process.stop()[0] == 0
        (fallback,) = process.events("executor.local_fallback")
    assert fallback["camera"] == "te" and fallback["waited"] >= WAIT_SECONDS
    assert len(process.events("frame.calibrated")) == 5  # calibrations still ran on the cluster
    assert {e.get("on") for e in process.events("frame.calibrated")} == {"cluster"}
    (attempt,) = catalog_rows(config, "SELECT task, executor, worker, outcome FROM attempts")
    assert (attempt["task"], attempt["executor"], attempt["outcome"]) == (
        "combine",
        "local",
        "done",
    )
    assert attempt["worker"].startswith("pid ")
    assert fits.getheader(published["path"])["NCOMBINE"] == 5
