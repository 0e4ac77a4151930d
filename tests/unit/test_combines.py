"""Combines, the combine queue, on a fake executor: no process, no sleep.

A real SQLite catalog in tmp_path, real small FITS inputs, and the combines ended by
the test (biaswatch.testing.fakes): submission, publication, retries, memory slots,
the service's stop and recovery after a crash.
"""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog
from biaswatch.combine.master_file import temporary_name
from biaswatch.config import Config, load_config
from biaswatch.publish.master import give_final_name, quality_on_disk
from biaswatch.rules.places import path_for_state
from biaswatch.rules.qc import MasterQC
from biaswatch.service.combines import LATEST_CHECK_SECONDS, MAX_TRIES, Combines
from biaswatch.testing.fakes import FakeExecutor, FakePreviews
from biaswatch.testing.fits import FakeClock, make_bias_fits

NIGHT = "2026-11-24"
# Two combines fit in max_combine_memory: 128 MB // 64 MB (config.combine_slots).
MEMORY = {"mem_limit": "64MB", "max_combine_memory": "128MB"}
RETRY_SECONDS = 30.0  # [service] combine_retry_seconds here: the first retry's wait


class Harness:
    """One Combines with its fakes, and what it told the service."""

    def __init__(self, base: Path, config: Config, executor: FakeExecutor) -> None:
        self.base = base
        self.config = config
        (base / "work").mkdir(exist_ok=True)
        self.clock = FakeClock()
        self.catalog = Catalog(base / "state" / "catalog.sqlite", now=self.clock.now)
        self.executor = executor
        self.previews = FakePreviews()
        self.published: list[Path] = []
        self.retries: list[tuple[int, dt.datetime]] = []
        self.alarms: list[tuple[str, dict[str, Any]]] = []
        self.combines = Combines(
            config,
            self.catalog,
            self.published.append,
            now=self.clock.now,
            wake=lambda: None,
            retry_at=lambda set_id, when: self.retries.append((set_id, when)),
            alarm=lambda name, **details: self.alarms.append((name, details)),
            executor=executor,
            previews=self.previews,
            monotonic=self.clock.monotonic,
        )
        self.combines.server_ready()

    def closed_set(self, frames: int = 3, camera: str = "cryo", seed: int = 0) -> int:
        """A closed set of ``frames`` real calibrated FITS frames."""
        set_id = 0
        for index in range(frames):
            name = f"{camera}-{seed}-{index}.fits"
            path = make_bias_fits(
                self.base / "work" / name,
                shape=(24, 32),
                overscan_cols=0,
                dtype="float32",
                seed=seed + index,
            )
            record = FrameRecord(
                f"/raw/{name}",
                camera,
                path.stat().st_size,
                1,
                status="valid",
                sha256=f"{seed:04d}{index:060d}",
                night=NIGHT,
                geometry="32x24-1x1",
                calibrated=str(path),
                date_obs=f"2026-11-25T02:00:{index:02d}",
            )
            set_id = self.catalog.add_to_set(record)
        self.catalog.set_state(set_id, "closed")
        return set_id

    def masters(self) -> list[Any]:
        """Every master row in the catalog."""
        return list(self.catalog.masters())

    def restarted(self) -> Harness:
        """A new Combines on the same catalog and files, as after a crash and a start."""
        self.catalog.close()
        return Harness(self.base, self.config, FakeExecutor(self.executor.slots))


def config_in(base: Path, **service: object) -> Config:
    """A config with cameras cryo and te, directories in ``base``."""
    settings = {"combine_retry_seconds": RETRY_SECONDS, **service}
    lines = "\n".join(f"{key} = {value!r}" for key, value in settings.items())
    for camera in ("cryo", "te"):
        (base / "incoming" / camera).mkdir(parents=True, exist_ok=True)
    text = f"""
        [service]
        state_dir = "{base / "state"}"
        masters_dir = "{base / "masters"}"
        {{service}}
        [site]
        timezone = "America/Chicago"
        [cameras.cryo]
        watch = ["{base / "incoming" / "cryo"}"]
        [cameras.te]
        watch = ["{base / "incoming" / "te"}"]
        """
    path = base / "config.toml"
    path.write_text(textwrap.dedent(text).replace("{service}", lines), encoding="utf-8")
    return load_config(path)


@pytest.fixture(name="harness")
def _harness(tmp_path: Path) -> Harness:
    config = config_in(tmp_path)
    return Harness(tmp_path, config, FakeExecutor(config.service.combine_slots))


def test_a_queued_set_is_submitted_once(tmp_path: Path) -> None:
    """A closed set queued twice and stepped twice is handed to the executor once."""
    harness = Harness(tmp_path, config_in(tmp_path), FakeExecutor(slots=2))  # room for two
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.queue(set_id)
    harness.combines.step()
    harness.combines.queue(set_id)  # running now: not queued again
    harness.combines.step()
    assert [job.set_id for job in harness.executor.jobs] == [set_id]
    assert harness.catalog.get_set(set_id).state == "combining"
    assert len(harness.executor.jobs[0].inputs) == 3


def test_nothing_starts_before_the_server_is_ready(tmp_path: Path) -> None:
    """A queued set waits until server_ready(); then it starts."""
    config = config_in(tmp_path)
    harness = Harness(tmp_path, config, FakeExecutor())
    harness.combines._ready = False  # as built by the service, before the probe child ran
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    assert harness.executor.jobs == []
    harness.combines.server_ready()
    harness.combines.step()
    assert [job.set_id for job in harness.executor.jobs] == [set_id]


def test_success_publishes_one_master_and_records_it(harness: Harness) -> None:
    """A combine's success gives its final name, one master row, latest.fits, a preview."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    temporary = harness.executor.succeed(set_id)
    assert temporary.exists() and temporary.name.startswith(f".{Path(job.final).name}.partial")
    harness.combines.step()
    final = Path(job.final)
    (master,) = harness.masters()
    assert (master.path, master.sequence, master.ncombine) == (str(final), 1, 3)
    assert (master.state, master.judged_by) == ("accepted", "biaswatch")
    assert harness.catalog.get_set(set_id).state == "done"
    assert final.is_file() and not temporary.exists()
    assert fits.getheader(final)["NCOMBINE"] == 3
    latest = harness.config.service.masters_dir / "cryo" / "latest.fits"
    assert latest.resolve() == final.resolve()
    assert harness.published == [final]
    assert harness.previews.asked == [(final, Path(job.inputs[0]), 3)]
    attempts = harness.catalog.attempts(set_id)
    assert [(a["worker"], a["outcome"]) for a in attempts] == [("fake 1", "done")]
    assert harness.combines.idle


def test_publication_judges_the_qc_of_the_answer(harness: Harness) -> None:
    """The master is judged and recorded with the QC in the combine's answer, not re-read."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    answered = MasterQC(1234.5, 2.0, 5.0, 2.9, 0, 0.01)
    harness.executor.succeed(set_id, quality=answered)
    harness.combines.step()
    (master,) = harness.masters()
    assert master.qc == answered
    on_disk = quality_on_disk(Path(master.path))
    assert on_disk is not None and on_disk.level != answered.level  # the header's own


def test_a_failure_is_retried_then_the_set_fails_with_its_reason(harness: Harness) -> None:
    """Each failed try is retried after a doubling wait; after MAX_TRIES the set is failed."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    for tries in range(1, MAX_TRIES + 1):
        harness.combines.step()
        assert harness.executor.running() == [set_id]
        harness.executor.fail(set_id, f"CombineFailed: try {tries}")
        harness.combines.step()
        row = harness.catalog.get_set(set_id)
        if tries < MAX_TRIES:
            assert (row.state, row.reason) == ("closed", f"CombineFailed: try {tries}")
            assert harness.retries[-1] == (
                set_id,
                harness.clock.now() + dt.timedelta(seconds=RETRY_SECONDS * 2 ** (tries - 1)),
            )
            harness.combines.queue(set_id)  # the retry timer's due (the main loop's)
    row = harness.catalog.get_set(set_id)
    assert (row.state, row.reason) == ("failed", f"CombineFailed: try {MAX_TRIES}")
    assert len(harness.executor.jobs) == MAX_TRIES
    assert len(harness.retries) == MAX_TRIES - 1
    assert harness.alarms == [
        ("set_failed", {"camera": "cryo", "night": NIGHT, "set": set_id, "reason": row.reason})
    ]
    assert harness.masters() == []
    assert len({job.info.sequence for job in harness.executor.jobs}) == 1  # kept across tries


def test_a_dead_child_is_a_failed_try_and_its_attempt_lost(harness: Harness) -> None:
    """A combine that dies without an answer counts a try with the signal as the reason."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    reason = harness.executor.die(set_id)
    harness.combines.step()
    row = harness.catalog.get_set(set_id)
    assert (row.state, row.reason) == ("closed", reason)
    assert "SIGKILL" in reason
    assert [set_id for set_id, _when in harness.retries] == [set_id]
    (attempt,) = harness.catalog.attempts(set_id)
    assert (attempt["outcome"], attempt["reason"]) == ("failed", reason)


def test_memory_slots_bound_how_many_run_at_once(tmp_path: Path) -> None:
    """With two memory slots, three queued sets run two at a time; the third when one ends."""
    config = config_in(tmp_path, **MEMORY)
    assert config.service.combine_slots == 2
    harness = Harness(tmp_path, config, FakeExecutor(config.service.combine_slots))
    sets = [harness.closed_set(seed=seed) for seed in (0, 10, 20)]
    for set_id in sets:
        harness.combines.queue(set_id)
    harness.combines.step()
    harness.combines.step()
    assert harness.executor.running() == sets[:2]
    harness.executor.succeed(sets[0])
    harness.combines.step()
    assert harness.executor.running() == sets[1:]
    assert [job.info.sequence for job in harness.executor.jobs] == [1, 2, 3]


def test_a_stop_abandons_running_combines_and_their_temporaries(harness: Harness) -> None:
    """At a stop, a running combine is stopped, its temporaries removed, its set closed."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    harness.combines.step()  # its start is recorded in the attempt history
    combine = harness.executor.combine_of(set_id)
    leftover = temporary_name(Path(job.final), set_id)
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a master")
    harness.combines.stop("service stopped during the combine")
    row = harness.catalog.get_set(set_id)
    assert combine.stopped and not leftover.exists()
    assert (row.state, row.reason) == ("closed", "service stopped during the combine")
    assert [a["outcome"] for a in harness.catalog.attempts(set_id)] == ["lost"]


def test_recover_adopts_a_master_named_but_not_recorded(harness: Harness) -> None:
    """After a crash between final name and catalog, recover() records it once, no combine."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    # The crash point after_rename: the file has its final name; the catalog does not know.
    give_final_name(harness.executor.succeed(set_id), Path(job.final))
    restarted = harness.restarted()
    restarted.combines.recover()
    restarted.combines.recover()  # a second start: nothing recorded twice
    restarted.combines.step()
    (master,) = restarted.masters()
    assert (master.path, master.sequence, master.ncombine) == (job.final, 1, 3)
    assert master.qc == quality_on_disk(Path(job.final))  # the only record left
    assert (master.state, master.judged_by) == ("accepted", "biaswatch")
    assert restarted.catalog.get_set(set_id).state == "done"
    assert restarted.executor.jobs == []
    latest = restarted.config.service.masters_dir / "cryo" / "latest.fits"
    assert latest.resolve() == Path(job.final).resolve()  # mended by check_latest


def index_of(harness: Harness, camera: str) -> list[tuple[str, str]]:
    """A camera's index.json read with json alone: (file, state) per master."""
    path = harness.config.service.masters_dir / camera / "index.json"
    return [(m["file"], m["state"]) for m in json.loads(path.read_text())["masters"]]


def test_recover_files_a_master_found_in_the_rejected_place_by_its_verdict(
    harness: Harness,
) -> None:
    """Named rejected before a crash, judged accepted at adoption: moved and recorded there."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    rejected_place = path_for_state(Path(job.final), "rejected")
    give_final_name(harness.executor.succeed(set_id), rejected_place)
    restarted = harness.restarted()
    restarted.combines.recover()
    (master,) = restarted.masters()
    # No baseline yet: the first masters of a camera are accepted (rules/acceptance.py).
    assert (master.state, master.path) == ("accepted", job.final)
    assert Path(job.final).is_file() and not rejected_place.exists()
    assert index_of(restarted, "cryo") == [(f"{NIGHT}/{Path(job.final).name}", "accepted")]


def test_recover_finishes_a_verdicts_move_and_writes_every_cameras_index(
    harness: Harness,
) -> None:
    """A verdict recorded but its rename lost: the start moves the file, then writes each index."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    harness.executor.succeed(set_id)
    harness.combines.step()
    final, rejected_place = Path(job.final), path_for_state(Path(job.final), "rejected")
    harness.catalog.judge_master(job.final, "rejected", "someone", "leak", str(rejected_place))
    restarted = harness.restarted()
    restarted.combines.recover()
    assert rejected_place.is_file() and not final.exists()
    assert index_of(restarted, "cryo") == [(f"rejected/{NIGHT}/{rejected_place.name}", "rejected")]
    assert index_of(restarted, "te") == []  # configured, no master yet: an index all the same
    assert not (restarted.config.service.masters_dir / "cryo" / "latest.fits").is_symlink()


def test_recover_requeues_an_interrupted_set_under_its_number(harness: Harness) -> None:
    """A set left combining by a crash is closed, queued and combined again, same sequence."""
    first, second = harness.closed_set(seed=0), harness.closed_set(camera="te", seed=10)
    for set_id in (first, second):
        harness.combines.queue(set_id)
        harness.combines.step()
    before = {job.set_id: job.info.sequence for job in harness.executor.jobs}
    restarted = harness.restarted()
    restarted.combines.recover()
    assert [restarted.catalog.get_set(s).state for s in (first, second)] == ["closed"] * 2
    restarted.combines.step()
    restarted.combines.step()
    assert {job.set_id: job.info.sequence for job in restarted.executor.jobs} == before
    assert restarted.masters() == []


def test_recover_does_not_adopt_a_temporary_and_its_publication_removes_it(
    harness: Harness,
) -> None:
    """A temporary left by a crash is combined again, not adopted; publication removes it."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    # Written by a run whose answer was lost (after_temporary), in another process.
    written = harness.executor.succeed(set_id)
    stale = written.with_name(f".{Path(job.final).name}.partial-set{set_id}-elsewhere-4242")
    written.rename(stale)
    other_set = temporary_name(Path(job.final), set_id + 100)
    other_set.write_bytes(b"another set's")
    restarted = harness.restarted()
    restarted.combines.recover()
    assert restarted.masters() == [] and stale.exists()
    restarted.combines.step()
    fresh = restarted.executor.succeed(set_id)
    restarted.combines.step()
    (master,) = restarted.masters()
    assert master.path == job.final
    assert not stale.exists() and not fresh.exists()
    assert other_set.read_bytes() == b"another set's"  # not this set's: left alone


def test_recover_leaves_a_removed_cameras_interrupted_set_closed(tmp_path: Path) -> None:
    """A set of a camera no longer configured, left combining, is closed and not combined."""
    harness = Harness(tmp_path, config_in(tmp_path), FakeExecutor())
    set_id = harness.closed_set(camera="gone")
    harness.catalog.set_state(set_id, "combining")
    harness.combines.recover()
    harness.combines.step()
    row = harness.catalog.get_set(set_id)
    # Closed by requeue_interrupted, neither set aside nor counted as a failed try.
    assert (harness.executor.jobs, row.state) == ([], "closed")
    assert row.reason == "combine interrupted; retrying"


def test_a_name_taken_by_a_stranger_gives_the_next_number(harness: Harness) -> None:
    """A file at the reserved name that is not this set's master is left; the set renumbers."""
    set_id = harness.closed_set()
    stranger = harness.config.service.masters_dir / "cryo" / NIGHT
    stranger.mkdir(parents=True)
    taken = stranger / f"bias_cryo_{NIGHT}_01_32x24-1x1.fits"
    taken.write_bytes(b"put here by hand")
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    assert job.info.sequence == 2 and job.final != str(taken)
    assert taken.read_bytes() == b"put here by hand"


def test_a_name_taken_during_the_combine_is_a_failed_try(harness: Harness) -> None:
    """EEXIST at the final name: the temporary is removed, the stranger kept, a try counted."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    (job,) = harness.executor.jobs
    temporary = harness.executor.succeed(set_id)
    Path(job.final).write_bytes(b"a second service's")
    harness.combines.step()
    row = harness.catalog.get_set(set_id)
    assert row.state == "closed" and "FileExistsError" in str(row.reason)
    assert not temporary.exists()
    assert Path(job.final).read_bytes() == b"a second service's"
    assert harness.masters() == []


def test_latest_is_checked_every_latest_check_seconds(harness: Harness) -> None:
    """A deleted latest.fits is pointed again once LATEST_CHECK_SECONDS have passed."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    harness.executor.succeed(set_id)
    harness.combines.step()
    latest = harness.config.service.masters_dir / "cryo" / "latest.fits"
    latest.unlink()
    harness.clock.advance(LATEST_CHECK_SECONDS / 2)
    harness.combines.step()
    assert not latest.is_symlink()
    harness.clock.advance(LATEST_CHECK_SECONDS / 2)
    harness.combines.step()
    assert latest.resolve() == Path(harness.masters()[0].path).resolve()


def test_fake_answers_end_a_combine_once(harness: Harness) -> None:
    """The fake executor refuses a second outcome for a combine that has ended."""
    set_id = harness.closed_set()
    harness.combines.queue(set_id)
    harness.combines.step()
    harness.executor.fail(set_id, "first")
    with pytest.raises(ValueError, match="no combine of set"):
        harness.executor.fail(set_id, "second")
