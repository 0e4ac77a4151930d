"""The reading commands as a user who may read the state and masters directories but not write them.

Each runs under another uid (setpriv, as ``biaswatch.testing.service.as_uid``: uid 65534
with only CAP_DAC_READ_SEARCH, so it reads what root's 0700 pytest folder hides and writes
only where the permission bits let it), against a catalog ``backfill`` made; the test
compares the tree's listing before and after. The tree lives in a folder of its own that
anyone may search (0755), not in root's 0700 pytest folder: SQLite checks the -shm with
access(2), which ignores capabilities for a non-root uid, and an operator reads a state
directory they can reach, not one the capability alone lets them open.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.service import READER, as_uid, searchable_tree

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run commands as another uid"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

NIGHT = "2025-03-10"  # the evening of the frames below (03:00 UTC is the evening before, Chicago)


@pytest.fixture
def tree() -> Iterator[Path]:
    """A new folder under the system's temporary folder that every user may search."""
    with searchable_tree("biaswatch-readonly-") as root:
        yield root


def as_reader(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m biaswatch ARGS`` as the reading user, output as text."""
    command = [*as_uid(READER), sys.executable, "-m", "biaswatch", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def listing(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root`` but ``skip``: (size, mtime_ns) by relative path."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if skip not in p.parents and p != skip
    }


def reading_commands(config: Path, out: Path) -> list[list[str | Path]]:
    """Each reading command, as an operator runs it."""
    return [
        ["masters", "--config", config],
        ["masters", "--config", config, "--json"],
        ["masters", "--config", config, "--for", f"{NIGHT}T04:00:00", "--camera", "cryo"],
        ["status", "--config", config],
        ["status", "--config", config, "--json"],
        ["attempts", "--config", config],
        ["log", "--config", config],
        ["report", "--config", config, "--night", NIGHT, "-o", out / "night.html"],
    ]


def backfilled(tree: Path) -> Path:
    """A config whose catalog, masters and log ``backfill`` made from one archived night."""
    config = write_config(tree, expected_frames=5, min_frames=3)
    archive = tree / "archive"
    archive.mkdir()
    for i in range(3):  # fewer than expected_frames: closed because the night is over
        write_cryo_raw(archive / f"b{i}.fits", 100 + i, date_obs=f"2025-03-11T03:00:0{i}")
    run_cli("backfill", "--config", config, "--camera", "cryo", archive, check=True)
    return config


def reader_folder(tree: Path) -> Path:
    """A folder the reading user owns, where ``report`` may write its page."""
    out = tree / "reader"
    out.mkdir()
    os.chown(out, READER, READER)
    return out


def expected_exit(name: str) -> int:
    """A reading command's exit status here: 0, but status's is CRITICAL (2): no service runs."""
    return 2 if name.startswith("status") else 0


def run_all(config: Path, out: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every reading command as the reader, by its command line."""
    return {" ".join(map(str, c[:1] + c[3:])): as_reader(*c) for c in reading_commands(config, out)}


def test_reading_commands_work_read_only_on_a_stopped_services_catalog(tree: Path) -> None:
    """With no -wal or -shm (service stopped), every reading command succeeds and writes nothing."""
    config = backfilled(tree)
    out = reader_folder(tree)
    for folder in (tree / "state", tree / "masters"):
        folder.chmod(0o755)  # root's: readable, not writable, by the reader
    assert not (tree / "state" / "catalog.sqlite-shm").exists()
    before = listing(tree, out)
    results = run_all(config, out)
    after = listing(tree, out)
    for name, result in results.items():
        assert result.returncode == expected_exit(name), f"{name}: {result.stderr}"
    assert results["status"].stdout.startswith("BIASWATCH CRITICAL - service not running")
    assert "accepted" in results["masters"].stdout
    assert results[f"masters --for {NIGHT}T04:00:00 --camera cryo"].stdout.startswith(
        str(tree / "masters" / "cryo")
    )
    assert "combine" in results["attempts"].stdout
    assert (out / "night.html").read_text().count("Camera cryo") == 1
    assert after == before


def test_reading_commands_work_read_only_beside_a_writer(tree: Path) -> None:
    """While a writer holds the catalog (its -wal and -shm exist), the reader sees its commits."""
    config = backfilled(tree)
    out = reader_folder(tree)
    database = tree / "state" / "catalog.sqlite"
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE masters SET state = 'rejected', judged_by = 'test'")
        assert Path(f"{database}-shm").exists()
        before = listing(tree, out)
        results = run_all(config, out)
        after = listing(tree, out)
    finally:
        writer.close()
    for name, result in results.items():
        assert result.returncode == expected_exit(name) or name.startswith("masters --for"), (
            f"{name}: {result.stderr}"
        )
    assert "rejected" in results["masters"].stdout  # the commit still in the WAL
    assert results[f"masters --for {NIGHT}T04:00:00 --camera cryo"].returncode == 1
    assert after == before


def test_reading_commands_on_a_fresh_setup_create_nothing(tree: Path) -> None:
    """Before any catalog, each reading command says so, exits 0 (status 2) and creates nothing."""
    config = write_config(tree)
    out = reader_folder(tree)
    before = listing(tree, out)
    results = {
        name: as_reader(name, "--config", config, *extra)
        for name, extra in {
            "masters": [],
            "status": [],
            "attempts": [],
            "report": ["--night", NIGHT, "-o", str(out / "night.html")],
        }.items()
    }
    assert listing(tree, out) == before
    assert not (tree / "state").exists() and not (out / "night.html").exists()
    for name, result in results.items():
        assert result.returncode == expected_exit(name), f"{name}: {result.stderr}"
    assert results["masters"].stdout == "no masters yet\n"
    catalog = tree / "state" / "catalog.sqlite"
    assert results["attempts"].stdout == f"no catalog yet at {catalog}\n"
    assert results["report"].stdout == f"no catalog yet at {catalog}\n"


def test_a_write_ahead_log_left_without_its_shm_is_refused_not_read_stale(tree: Path) -> None:
    """A -wal with no -shm (a crash) may hold commits: the reader is told to start the service."""
    config = backfilled(tree)
    database = tree / "state" / "catalog.sqlite"
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # keep the commit in the WAL
        writer.execute("UPDATE masters SET state = 'rejected', judged_by = 'test'")
        kept = {suffix: Path(f"{database}{suffix}").read_bytes() for suffix in ("", "-wal")}
    finally:
        writer.close()  # checkpoints, and deletes the -wal and -shm
    for suffix, content in kept.items():  # as a crash leaves them, but for the -shm
        Path(f"{database}{suffix}").write_bytes(content)
    before = listing(tree, tree / "reader")
    result = as_reader("masters", "--config", config)
    assert listing(tree, tree / "reader") == before
    assert result.returncode == 78, result.stderr
    assert "catalog.sqlite-wal has no -shm beside it" in result.stderr
    assert "start the service once" in result.stderr
