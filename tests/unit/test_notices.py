"""Notices queued in the catalog and their delivery per target (fake senders, fake clock)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.catalog.notices import Notice, NoticeQueue
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.hooks import NotifyConfig
from biaswatch.publish.master import latest_link, point_latest, repair_latest
from biaswatch.service.notices import Delivery, DeliveryFailed, back_off
from biaswatch.testing.fits import FakeClock
from biaswatch.testing.helpers import catalog_in, valid_frame

NOTIFY = NotifyConfig(command=("true",), url="http://127.0.0.1:9/hook", max_tries=3)


class FakeTarget:
    """A sender that records what it delivered and fails its first ``fail`` tries."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.delivered: list[int] = []
        self.tries = 0

    def send(self, notice: Notice, body: bytes) -> None:
        """Record the body's notice id, or fail while failures are left."""
        self.tries += 1
        if self.fail > 0:
            self.fail -= 1
            raise DeliveryFailed("HTTP 500 Internal Server Error")
        assert json.loads(body)["notice"] == notice.id
        self.delivered.append(notice.id)


@pytest.fixture
def clock() -> FakeClock:
    """The catalog's and the sender's clock."""
    return FakeClock()


@pytest.fixture
def catalog(tmp_path: Path, clock: FakeClock) -> Iterator[Catalog]:
    """A real catalog in tmp_path, closed after the test."""
    opened = catalog_in(tmp_path, clock)
    yield opened
    opened.close()


@pytest.fixture
def queue(tmp_path: Path, catalog: Catalog) -> Iterator[NoticeQueue]:
    """The sender's own connection to the same catalog."""
    opened = NoticeQueue(tmp_path / "catalog.sqlite")
    yield opened
    opened.close()


def record(catalog: Catalog, sequence: int, state: str = "accepted", path: str = "") -> str:
    """A master of camera cryo recorded with ``sequence`` and ``state``; returns its path."""
    path = path or f"/m/bias_cryo_2026-11-24_{sequence:03d}.fits"
    set_id = catalog.add_to_set(valid_frame(f"f{sequence}.fits"))
    row = MasterRow("cryo", "2026-11-24", sequence, "48x40-1x1", path, 2, "d", "t")
    catalog.record_master(set_id, replace(row, state=state))
    return path


def delivery(queue: NoticeQueue, clock: FakeClock, **targets: FakeTarget | None) -> Delivery:
    """A Delivery over ``queue`` with fake targets (unset ones None)."""
    senders = {"command": targets.get("command"), "url": targets.get("url")}
    return Delivery(queue, senders, NOTIFY, clock.now)


def test_record_master_queues_published_or_rejected(catalog: Catalog) -> None:
    """An accepted master queues master.published, one biaswatch rejected master.rejected."""
    record(catalog, 1)
    record(catalog, 2, state="rejected")
    events = [(event, camera) for _, event, camera in catalog.notice_events()]
    assert events == [("master.published", "cryo"), ("master.rejected", "cryo")]


def test_notice_payload_names_the_master(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """The payload carries id, event, camera, night, sequence, path, state, configuration, time."""
    path = record(catalog, 1)
    notice = queue.head("url")
    assert notice is not None
    body = notice.body
    assert body["notice"] == notice.id
    assert (body["event"], body["camera"], body["night"]) == (
        "master.published",
        "cryo",
        "2026-11-24",
    )
    assert (body["sequence"], body["path"], body["state"]) == (1, path, "accepted")
    assert body["configuration"] == "48x40-1x1"
    assert body["time"] == clock.now().isoformat(timespec="milliseconds")


def test_a_rolled_back_record_master_leaves_no_notice(catalog: Catalog) -> None:
    """record_master failing inside its transaction leaves neither the master nor its notice."""
    record(catalog, 1)
    set_id = catalog.add_to_set(valid_frame("other.fits"))
    row = MasterRow("cryo", "2026-11-24", 1, "48x40-1x1", "/m/dup.fits", 2, "d", "t")
    with pytest.raises(sqlite3.IntegrityError):  # (camera, night, sequence) is taken
        catalog.record_master(set_id, row)
    assert not catalog.master_recorded("/m/dup.fits")
    assert len(catalog.notice_events()) == 1


def test_judge_master_queues_a_verdict_with_old_and_new_state(
    catalog: Catalog, queue: NoticeQueue
) -> None:
    """A person's reject queues master.verdict with the old and new state, who and why."""
    path = record(catalog, 1)
    catalog.judge_master(path, "rejected", "ana", "light leak")
    queue.settle("url", 1, "sent", 1, None)
    notice = queue.head("url")
    assert notice is not None and notice.event == "master.verdict"
    assert notice.body["previous_state"] == "accepted"
    assert notice.body["state"] == "rejected"
    assert (notice.body["judged_by"], notice.body["reason"]) == ("ana", "light leak")


def test_a_verdict_that_changes_nothing_queues_nothing(catalog: Catalog) -> None:
    """Accepting a master already accepted queues no master.verdict."""
    path = record(catalog, 1)
    catalog.judge_master(path, "accepted", "ana", "looked fine")
    assert [event for _, event, _ in catalog.notice_events()] == ["master.published"]


def test_a_rolled_back_verdict_leaves_no_notice(catalog: Catalog) -> None:
    """A judge_master transaction that fails after its notice leaves neither state nor notice."""
    path = record(catalog, 1)
    catalog._db.execute(  # a failure after the notice's INSERT, inside the transaction
        "CREATE TRIGGER refuse AFTER INSERT ON notices WHEN NEW.event = 'master.verdict'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        catalog.judge_master(path, "rejected", "ana", "light leak")
    assert catalog.masters()[0].state == "accepted"
    assert [event for _, event, _ in catalog.notice_events()] == ["master.published"]


def test_each_target_gets_every_notice_in_id_order(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """Three notices reach the command and the url once each, in id order."""
    for sequence in (1, 2, 3):
        record(catalog, sequence)
    command, url = FakeTarget(), FakeTarget()
    delivery(queue, clock, command=command, url=url).deliver_due()
    delivery(queue, clock, command=command, url=url).deliver_due()
    assert command.delivered == url.delivered == [1, 2, 3]
    assert [state for _, state, _ in queue.target_states("url")] == ["sent"] * 3


def test_a_failed_try_waits_its_back_off_and_holds_the_notices_behind(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """After a failure the head is retried only after retry_seconds, doubling; later ones wait."""
    record(catalog, 1)
    record(catalog, 2)
    url = FakeTarget(fail=2)
    sender = delivery(queue, clock, url=url)
    sender.deliver_due()
    assert (url.tries, url.delivered) == (1, [])
    clock.advance(NOTIFY.retry_seconds - 0.1)
    sender.deliver_due()
    assert url.tries == 1  # not yet due
    clock.advance(0.1)
    sender.deliver_due()
    assert url.tries == 2
    clock.advance(2 * NOTIFY.retry_seconds - 0.1)
    sender.deliver_due()
    assert url.tries == 2  # the second back-off is twice the first
    clock.advance(0.1)
    sender.deliver_due()
    assert url.delivered == [1, 2]


def test_back_off_doubles_and_is_capped() -> None:
    """The waits are retry_seconds x 1, 2, 4, ... and never more than 600 s."""
    notify = NotifyConfig(retry_seconds=5)
    assert [back_off(notify, tries) for tries in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert back_off(notify, 30) == 600


def test_after_max_tries_the_notice_fails_and_the_next_is_sent(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """A notice failing max_tries times is marked failed, and the one behind it goes."""
    record(catalog, 1)
    record(catalog, 2)
    url = FakeTarget(fail=NOTIFY.max_tries)
    sender = delivery(queue, clock, url=url)
    for _ in range(NOTIFY.max_tries):
        sender.deliver_due()
        clock.advance(600)
    assert url.delivered == [2]
    assert queue.target_states("url") == [(1, "failed", NOTIFY.max_tries), (2, "sent", 1)]


def test_a_failing_url_does_not_hold_the_command(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """While the url fails its head notice, the command gets every notice."""
    for sequence in (1, 2):
        record(catalog, sequence)
    command, url = FakeTarget(), FakeTarget(fail=100)
    delivery(queue, clock, command=command, url=url).deliver_due()
    assert command.delivered == [1, 2]
    assert url.delivered == []


def test_an_unset_target_marks_its_notices_none(
    catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """With no url set, its column says none ("no target"); the command still gets the notice."""
    record(catalog, 1)
    command = FakeTarget()
    delivery(queue, clock, command=command).deliver_due()
    assert command.delivered == [1]
    assert queue.target_states("url") == [(1, "none", 0)]


def test_pending_notices_and_their_schedule_survive_a_reopen(
    tmp_path: Path, catalog: Catalog, queue: NoticeQueue, clock: FakeClock
) -> None:
    """A notice that failed once is still pending, with its next try, after a close and reopen."""
    record(catalog, 1)
    delivery(queue, clock, url=FakeTarget(fail=1)).deliver_due()
    queue.close()
    catalog.close()
    reopened_catalog = catalog_in(tmp_path, clock)
    reopened = NoticeQueue(tmp_path / "catalog.sqlite")
    try:
        url = FakeTarget()
        sender = delivery(reopened, clock, url=url)
        sender.deliver_due()
        assert url.delivered == []  # its back-off was kept
        clock.advance(NOTIFY.retry_seconds)
        sender.deliver_due()
        assert url.delivered == [1]
        assert reopened.target_states("url") == [(1, "sent", 2)]
    finally:
        reopened.close()
        reopened_catalog.close()


def small_master(masters: Path, sequence: int) -> Path:
    """A master file on disk under ``masters``/cryo/<night>/."""
    path = masters / "cryo" / "2026-11-24" / f"bias_cryo_2026-11-24_{sequence:03d}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(path)
    return path


def test_latest_moved_is_queued_once_the_link_moves(catalog: Catalog, tmp_path: Path) -> None:
    """repair_latest moves both links and queues one latest.moved each; again, nothing more."""
    masters = tmp_path / "masters"
    path = small_master(masters, 1)
    record(catalog, 1, path=str(path))
    repair_latest(catalog, masters, set())
    repair_latest(catalog, masters, set())
    events = [event for _, event, _ in catalog.notice_events()]
    assert events == ["master.published", "latest.moved", "latest.moved"]


def test_a_link_moved_before_a_crash_is_announced_by_the_next_repair(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A link moved but never announced (a crash between) is announced by repair_latest."""
    masters = tmp_path / "masters"
    path = small_master(masters, 1)
    record(catalog, 1, path=str(path))
    point_latest(latest_link(masters, "cryo"), path)  # as publish_master did before dying
    repair_latest(catalog, masters, set())
    assert [e for _, e, _ in catalog.notice_events()].count("latest.moved") == 2


def test_a_link_left_with_no_accepted_master_is_announced_removed(
    catalog: Catalog, queue: NoticeQueue, tmp_path: Path
) -> None:
    """Rejecting the only master queues latest.moved with path null for each link."""
    masters = tmp_path / "masters"
    path = small_master(masters, 1)
    record(catalog, 1, path=str(path))
    repair_latest(catalog, masters, set())
    catalog.judge_master(str(path), "rejected", "ana", "light leak")
    latest_link(masters, "cryo").unlink()  # as biaswatch reject does
    repair_latest(catalog, masters, set())
    for notice_id in range(1, 5):
        queue.settle("url", notice_id, "sent", 1, None)
    removed = queue.head("url")
    assert removed is not None and removed.event == "latest.moved"
    assert removed.body["path"] is None
    assert removed.body["previous"] == str(path)
    assert len(catalog.notice_events()) == 6  # published, 2 moved, verdict, 2 removed


def test_a_version_1_catalog_is_migrated_without_announcing_its_links(tmp_path: Path) -> None:
    """Migrating 1 -> 2 counts today's links as announced: no flood of latest.moved at start."""
    first = catalog_in(tmp_path)
    record(first, 1)
    first._db.execute("DROP TABLE notices")
    first._db.execute("DROP TABLE announced")
    first._db.execute("PRAGMA user_version = 1")
    first.close()
    migrated = catalog_in(tmp_path)
    try:
        assert migrated.announced_links() == {
            ("cryo", ""): "/m/bias_cryo_2026-11-24_001.fits",
            ("cryo", "48x40-1x1"): "/m/bias_cryo_2026-11-24_001.fits",
        }
        assert migrated.notice_events() == []
    finally:
        migrated.close()
