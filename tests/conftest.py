"""Shared fixtures (config files on temporary directories, structlog reset) and the test tiers.

A test's tier is the folder it lives in, never a hand-written marker: tests/unit (no
child process, no sleeping, no thread to wait on: seconds in all), tests/commands (CLI
subprocesses on a catalog, no service) and tests/service (the real service, FUSE,
Chromium, Dask clusters, watchdog, threads and timers). ``pytest -m unit`` or
``-m "not service"`` select by tier.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import structlog

from biaswatch import logs
from biaswatch.catalog.store import Catalog
from biaswatch.config import CameraConfig
from biaswatch.testing.helpers import catalog_in, cryo_camera

TIERS = ("unit", "commands", "service")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the tier named by its folder under tests/."""
    here = Path(__file__).parent
    for item in items:
        if not item.path.is_relative_to(here):
            continue  # pytest calls this hook with the whole session's items
        tier = item.path.relative_to(here).parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(name="catalog")
def _catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A real SQLite catalog in tmp_path/state, dated by a FakeClock."""
    catalog = catalog_in(tmp_path / "state")
    yield catalog
    catalog.close()


@pytest.fixture(name="camera")
def _camera(tmp_path: Path) -> CameraConfig:
    """Camera cryo watching tmp_path, every setting its default."""
    return cryo_camera(tmp_path)


@pytest.fixture(name="write_config")
def _write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a TOML config (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were before the test (logs.configure)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def journal_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IO[str]]:
    """A real file as sys.stdout, named by JOURNAL_STREAM as systemd would name the stream."""
    with open(tmp_path / "stdout", "w+", encoding="utf-8") as out:
        status = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        yield out


@pytest.fixture
def journal_socket() -> Iterator[tuple[Path, socket.socket]]:
    """A bound AF_UNIX datagram socket standing in for /run/systemd/journal/socket."""
    folder = tempfile.mkdtemp(prefix="bwj-")  # AF_UNIX paths: at most 107 bytes
    path = Path(folder) / "socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield path, sock
    path.unlink()
    path.parent.rmdir()


@pytest.fixture
def native(
    journal_stdout: IO[str],
    journal_socket: tuple[Path, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[str], socket.socket]:
    """Configures logging at a level with the journal stream and the native socket; gives the
    socket, whose datagrams the test reads."""
    path, sock = journal_socket

    def configure_native(level: str) -> socket.socket:
        """logs.configure at ``level`` on the journal stream, with the native socket (stdout
        set in the test: pytest's capture puts its own back after a fixture's set-up)."""
        monkeypatch.setattr("sys.stdout", journal_stdout)
        logs.configure(None, level, console=False, journal_socket=path)
        return sock

    return configure_native
