"""The attempt history: each run of a combine task, where it ran and how it ended."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from biaswatch.catalog.store import Catalog
from biaswatch.config import load_config
from biaswatch.publish.report import write_report
from biaswatch.testing.helpers import valid_frame as valid


def outcomes(catalog: Catalog, set_id: int) -> list[tuple[str, str, str]]:
    """(task, worker, outcome) of a set's attempts, oldest first."""
    return [(r["task"], r["worker"], r["outcome"]) for r in catalog.attempts(set_id)]


def test_a_rerun_elsewhere_marks_the_earlier_run_lost(catalog: Catalog) -> None:
    """A task starting again while its earlier run is 'running' means that run was lost."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "combine", "dask", "w1")
    catalog.attempt_started(set_id, "combine", "dask", "w2")
    catalog.attempt_ended(set_id, "combine", "w2", "done")
    assert outcomes(catalog, set_id) == [("combine", "w1", "lost"), ("combine", "w2", "done")]
    assert "ran again on w2" in catalog.attempts(set_id)[0]["reason"]


def test_other_tasks_of_the_set_are_not_marked_lost(catalog: Catalog) -> None:
    """Bands of one split combine run side by side; each has its own attempts."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "band 1/2", "dask", "w1")
    catalog.attempt_started(set_id, "band 2/2", "dask", "w2")
    assert [o for *_, o in outcomes(catalog, set_id)] == ["running", "running"]


def test_an_answer_without_an_announced_start_is_still_recorded(catalog: Catalog) -> None:
    """A task's own answer ends its attempt, or records one if the start never arrived."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "combine", "dask", "w1")
    catalog.attempt_answered(set_id, "combine", "dask", "w1", "failed", "disk full")
    catalog.attempt_answered(set_id, "combine", "dask", "w2", "done", None)
    rows = catalog.attempts(set_id)
    assert [(r["worker"], r["outcome"], r["reason"]) for r in rows] == [
        ("w1", "failed", "disk full"),
        ("w2", "done", None),
    ]


def test_an_answer_after_its_ended_announcement_is_one_attempt(catalog: Catalog) -> None:
    """The worker's 'ended' event, then the task's own answer: one attempt row, not two."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "combine", "dask", "w1")
    catalog.attempt_ended(set_id, "combine", "w1", "failed", "disk full")
    catalog.attempt_answered(set_id, "combine", "dask", "w1", "failed", "disk full")
    catalog.attempt_started(set_id, "combine", "dask", "w1")  # the retry, same worker
    catalog.attempt_ended(set_id, "combine", "w1", "done")
    catalog.attempt_answered(set_id, "combine", "dask", "w1", "done", None)
    rows = catalog.attempts(set_id)
    assert [(r["worker"], r["outcome"]) for r in rows] == [("w1", "failed"), ("w1", "done")]


def test_runs_left_running_when_the_set_resolves_are_lost(catalog: Catalog) -> None:
    """Attempts still 'running' once the set has its answer gave none: 'lost', with why."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "band 1/2", "dask", "w1")
    catalog.attempt_started(set_id, "band 2/2", "dask", "w2")
    catalog.attempt_ended(set_id, "band 2/2", "w2", "done")
    assert catalog.attempts_lost(set_id, "scheduler gone") == 1
    assert outcomes(catalog, set_id) == [
        ("band 1/2", "w1", "lost"),
        ("band 2/2", "w2", "done"),
    ]


def test_the_night_report_shows_lost_and_failed_attempts(tmp_path: Path, catalog: Catalog) -> None:
    """The morning page lists the combine runs that gave no master, with worker and reason."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "combine", "dask", "tcp://10.0.0.5:4000")
    catalog.attempt_started(set_id, "combine", "dask", "tcp://10.0.0.6:4000")
    catalog.attempt_ended(set_id, "combine", "tcp://10.0.0.6:4000", "done")
    catalog.close()
    config = tmp_path / "config.toml"
    config.write_text('[service]\nstate_dir = "state"\n[cameras.cryo]\nwatch = ["in"]\n')
    out = tmp_path / "night.html"
    night, now = dt.date(2026, 11, 24), dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    page = write_report(load_config(config), night, out, now).read_text()
    assert "Combine attempts lost or failed (1)" in page
    assert "tcp://10.0.0.5:4000" in page and "ran again on tcp://10.0.0.6:4000" in page
    assert "10.0.0.6:4000</td><td>done" not in page  # the run that made the master is not trouble
