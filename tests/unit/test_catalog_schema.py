"""The catalog's schema version (PRAGMA user_version) and the reading commands' read-only open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from biaswatch.catalog.open import open_catalog, open_reading
from biaswatch.catalog.store import SCHEMA_VERSION, Catalog, utc_now
from biaswatch.errors import ConfigError
from biaswatch.system.mounts import Mount
from biaswatch.testing.helpers import catalog_in

LOCAL = [Mount(Path("/"), "ext4", "/dev/sda1")]  # no network filesystem in the tests' view


def user_version(path: Path) -> int:
    """The schema version stored in the catalog file at ``path``."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def set_user_version(path: Path, version: int) -> None:
    """Store ``version`` as the catalog's schema version, as another biaswatch would."""
    db = sqlite3.connect(path)
    try:
        db.execute(f"PRAGMA user_version = {version}")
    finally:
        db.close()


def made_catalog(tmp_path: Path) -> Path:
    """A catalog the service's open made (schema and migration), closed again."""
    catalog_in(tmp_path).close()
    return tmp_path / "catalog.sqlite"


def test_the_services_open_writes_the_schema_version(tmp_path: Path) -> None:
    """A new catalog, and one of the version before versioning (0), carry SCHEMA_VERSION."""
    path = made_catalog(tmp_path)
    assert user_version(path) == SCHEMA_VERSION
    set_user_version(path, 0)
    catalog_in(tmp_path).close()
    assert user_version(path) == SCHEMA_VERSION


def test_reading_a_missing_catalog_gives_none_and_creates_nothing(tmp_path: Path) -> None:
    """Before any catalog, the read-only open says None and makes no file or folder."""
    assert open_reading(tmp_path / "state" / "catalog.sqlite") is None
    assert list(tmp_path.iterdir()) == []


def test_reading_a_newer_catalog_names_both_versions(tmp_path: Path) -> None:
    """A catalog of a newer biaswatch is refused, with its version and this code's."""
    path = made_catalog(tmp_path)
    set_user_version(path, SCHEMA_VERSION + 6)
    expected = (
        f"catalog schema {SCHEMA_VERSION + 6} is newer than this biaswatch "
        f"\\({SCHEMA_VERSION}\\): upgrade biaswatch"
    )
    with pytest.raises(ConfigError, match=expected):
        open_reading(path)


def test_the_service_refuses_a_newer_catalog_and_leaves_its_version(tmp_path: Path) -> None:
    """The service does not migrate a newer catalog "down": it refuses it, version unchanged."""
    path = made_catalog(tmp_path)
    set_user_version(path, SCHEMA_VERSION + 1)
    with pytest.raises(ConfigError, match="is newer than this biaswatch"):
        open_catalog(path, utc_now, LOCAL)
    assert user_version(path) == SCHEMA_VERSION + 1


def test_a_writing_command_refuses_a_newer_catalog_too(tmp_path: Path) -> None:
    """Catalog() itself (accept/reject, backfill) refuses a newer catalog, version unchanged."""
    path = made_catalog(tmp_path)
    set_user_version(path, SCHEMA_VERSION + 1)
    with pytest.raises(ConfigError, match="is newer than this biaswatch"):
        Catalog(path)
    assert user_version(path) == SCHEMA_VERSION + 1


def test_an_older_catalog_with_every_column_is_read_as_it_is(tmp_path: Path) -> None:
    """A version-0 catalog that has every column is read, and its version is not raised."""
    path = made_catalog(tmp_path)
    set_user_version(path, 0)
    catalog = open_reading(path)
    assert catalog is not None
    try:
        assert catalog.masters() == []
    finally:
        catalog.close()
    assert user_version(path) == 0


def test_an_older_catalog_missing_a_column_asks_for_the_service(tmp_path: Path) -> None:
    """A version-0 catalog lacking a column read today names it and says to run the service."""
    path = made_catalog(tmp_path)
    db = sqlite3.connect(path)
    try:
        db.execute("ALTER TABLE frames DROP COLUMN segments_qc")
        db.execute("PRAGMA user_version = 0")
    finally:
        db.close()
    with pytest.raises(
        ConfigError, match=r"schema 0 is older.*frames\.segments_qc.*run the service"
    ):
        open_reading(path)


def test_the_read_only_catalog_refuses_writes(tmp_path: Path) -> None:
    """A catalog opened for reading cannot change the file: SQLite says it is read-only."""
    path = made_catalog(tmp_path)
    catalog = open_reading(path)
    assert catalog is not None
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            catalog.flag_set(1, "warm")
    finally:
        catalog.close()


def test_a_file_that_is_no_database_is_one_clear_line(tmp_path: Path) -> None:
    """A catalog path holding something else is refused naming the file, not with a traceback."""
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(
        ConfigError, match=r"catalog\.sqlite: cannot be read \(file is not a database"
    ):
        open_reading(path)


def test_a_version_1_catalog_is_read_as_it_is_and_migrated_by_the_writer(tmp_path: Path) -> None:
    """A schema-1 catalog (no notices tables) is read unchanged; the writer's open makes it 2."""
    path = made_catalog(tmp_path)
    db = sqlite3.connect(path)
    try:
        db.execute("DROP TABLE notices")
        db.execute("DROP TABLE announced")
        db.execute("PRAGMA user_version = 1")
    finally:
        db.close()
    catalog = open_reading(path)
    assert catalog is not None
    try:
        assert catalog.masters() == []
    finally:
        catalog.close()
    assert user_version(path) == 1
    catalog_in(tmp_path).close()
    assert user_version(path) == SCHEMA_VERSION == 2
    writer = catalog_in(tmp_path)
    try:
        assert writer.notice_events() == []
    finally:
        writer.close()
