"""Nothing twice: master sequence numbers reserved in the catalog (issue 11, finding 4).

Fast tests of the reservation and of Combines with a fake executor; the service tests
(tests/service/test_nothing_twice.py) drop frames at once on a service with two combine slots.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.combine.master_file import temporaries_of, temporary_name
from biaswatch.config import load_config
from biaswatch.service.combines import Combines, action_for
from biaswatch.testing.fakes import FakeExecutor
from biaswatch.testing.fits import FakeClock
from biaswatch.testing.helpers import valid_frame as valid
from biaswatch.testing.helpers import write_config

NIGHT = "2026-11-24"
# Two combines at once: max_combine_memory // mem_limit (config.combine_slots), as test_load.
TWO_SLOTS = {"mem_limit": "64MB", "max_combine_memory": "128MB"}


def master(set_id: int, sequence: int) -> MasterRow:
    """A master row of camera cryo's night."""
    path = f"/m/{set_id}-{sequence}.fits"
    return MasterRow("cryo", NIGHT, sequence, "48x40-1x1", path, 1, "d", "2026-11-25")


def test_sets_reserve_distinct_numbers_and_keep_them(catalog: Catalog) -> None:
    """Two sets of one night reserve 1 and 2, keep them when asked again, and a third gets 3."""
    first = catalog.add_to_set(valid("a"))
    second = catalog.add_to_set(valid("b", geometry="32x32-1x1"))
    assert (catalog.reserve_sequence(first), catalog.reserve_sequence(second)) == (1, 2)
    assert (catalog.reserve_sequence(first), catalog.reserve_sequence(second)) == (1, 2)
    catalog.record_master(first, master(first, 1))
    third = catalog.add_to_set(valid("c", geometry="16x16-1x1"))
    assert catalog.reserve_sequence(third) == 3
    assert catalog.next_sequence("cryo", NIGHT) == 4


def test_a_taken_or_too_low_number_is_replaced(catalog: Catalog) -> None:
    """A set whose number another's master took, or not above one on disk, gets a new one."""
    first = catalog.add_to_set(valid("a"))
    second = catalog.add_to_set(valid("b", geometry="32x32-1x1"))
    catalog.record_master(first, master(first, 1))
    # A hand-edited or raced catalog: the second set holds the first's number.
    catalog._db.execute("UPDATE sets SET sequence = NULL WHERE id = ?", (first,))
    catalog._db.execute("UPDATE sets SET sequence = 1 WHERE id = ?", (second,))
    assert catalog.reserve_sequence(second) == 2
    assert catalog.reserve_sequence(second, above=7) == 8
    assert catalog.sequence_free(second, "cryo", NIGHT, 8)
    assert not catalog.sequence_free(first, "cryo", NIGHT, 8)


def test_the_catalog_refuses_two_sets_one_number(catalog: Catalog) -> None:
    """The unique index on (camera, night, sequence) of sets refuses a second holder."""
    first = catalog.add_to_set(valid("a"))
    second = catalog.add_to_set(valid("b", geometry="32x32-1x1"))
    catalog.reserve_sequence(first)
    with pytest.raises(sqlite3.IntegrityError):
        catalog._db.execute("UPDATE sets SET sequence = 1 WHERE id = ?", (second,))


def test_an_old_catalog_gets_the_sequence_column(tmp_path: Path) -> None:
    """An old catalog gets sets.sequence at open and reserves above its masters."""
    path = tmp_path / "catalog.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sets (id INTEGER PRIMARY KEY, camera TEXT NOT NULL, night TEXT NOT NULL,"
        " geometry TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, tries INTEGER NOT NULL"
        " DEFAULT 0, created TEXT NOT NULL, updated TEXT NOT NULL);"
        "INSERT INTO sets VALUES (1, 'cryo', '2026-11-24', 'g', 'done', NULL, 0, 'x', 'x');"
        "INSERT INTO sets VALUES (2, 'cryo', '2026-11-24', 'g', 'closed', NULL, 0, 'x', 'x');"
    )
    old.close()
    catalog = Catalog(path, now=FakeClock().now)
    catalog._db.execute(
        "INSERT INTO masters (set_id, camera, night, sequence, geometry, path, ncombine,"
        " input_digest, created) VALUES (1, 'cryo', '2026-11-24', 4, 'g', '/m/4', 5, 'd', 'x')"
    )
    assert catalog.reserve_sequence(2) == 5


def test_temporaries_are_matched_per_set(tmp_path: Path) -> None:
    """A set's clean-up matches its own temporaries only, not another set's beside the same name."""
    final = tmp_path / "bias_cryo_2026-11-24_01_g.fits"
    mine, other = temporary_name(final, 3), temporary_name(final, 31)
    for path in (mine, other):
        path.touch()
    assert temporaries_of(final, 3) == [mine]


def test_eexist_is_explained_as_a_name_taken() -> None:
    """A combine failing with EEXIST is explained as a file of that name existing already."""
    action = action_for("publishing failed: FileExistsError: [Errno 17] File exists: 'x'")
    assert "a file of that name exists already" in action
    assert "not a directory stands" not in action


def fake_combines(tmp_path: Path, catalog: Catalog, executor: FakeExecutor) -> Combines:
    """Combines on two slots of the harness's config, its executor a fake."""
    return Combines(
        load_config(write_config(tmp_path, service=TWO_SLOTS)),
        catalog,
        lambda _path: None,
        now=lambda: dt.datetime.now(dt.UTC),
        wake=lambda: None,
        retry_at=lambda _set, _when: None,
        executor=executor,
    )


def test_two_slots_start_two_sets_under_two_names(tmp_path: Path, catalog: Catalog) -> None:
    """Two closed sets of one night started at once get two different master names."""
    executor = FakeExecutor(slots=2)
    combines = fake_combines(tmp_path, catalog, executor)
    sets = [catalog.add_to_set(valid("a")), catalog.add_to_set(valid("b", geometry="3x3-1x1"))]
    combines.server_ready()
    for set_id in sets:
        catalog.set_state(set_id, "closed")
        combines.queue(set_id)
    combines.step()
    assert [job.info.sequence for job in executor.jobs] == [1, 2]
    assert len({job.final for job in executor.jobs}) == 2


def test_recovery_sets_aside_a_set_it_cannot_read_and_queues_the_rest(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set whose inputs cannot be read at start is failed with the reason; the next is queued."""
    executor = FakeExecutor(slots=2)
    combines = fake_combines(tmp_path, catalog, executor)
    broken, fine = (
        catalog.add_to_set(valid("a")),
        catalog.add_to_set(valid("b", geometry="3x3-1x1")),
    )
    for set_id in (broken, fine):
        catalog.set_state(set_id, "combining")
    inputs = catalog.set_inputs

    def set_inputs(set_id: int) -> list[sqlite3.Row]:
        if set_id == broken:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return inputs(set_id)

    monkeypatch.setattr(catalog, "set_inputs", set_inputs)
    combines.recover()
    monkeypatch.undo()
    assert catalog.get_set(broken).state == "failed"
    assert "DatabaseError: database disk image is malformed" in str(catalog.get_set(broken).reason)
    combines.server_ready()
    combines.step()
    assert [job.set_id for job in executor.jobs] == [fine]


def test_recovery_leaves_a_removed_cameras_set_closed(tmp_path: Path, catalog: Catalog) -> None:
    """A closed set of a camera no longer configured is neither combined nor failed at start."""
    executor = FakeExecutor(slots=2)
    combines = fake_combines(tmp_path, catalog, executor)
    gone = catalog.add_to_set(replace(valid("a"), camera="gone"))
    catalog.set_state(gone, "closed")
    combines.recover()
    combines.server_ready()
    combines.step()
    left = catalog.get_set(gone)
    assert (executor.jobs, left.state, left.reason) == ([], "closed", None)  # not a failed try
