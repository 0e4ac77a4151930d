"""Config loading: defaults, inheritance, paths, and errors that name table and key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.config import load_config
from biaswatch.errors import ConfigError
from biaswatch.sections import Section
from biaswatch.settings import parse_size

Write = Callable[[str], Path]

MINIMAL = """
[cameras.cryo]
watch = ["incoming/cryo"]
"""


def problems_of(write_config: Write, text: str) -> list[str]:
    """The problems load_config reports for this TOML text."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    return info.value.problems


class TestDefaults:
    def test_only_watch_is_required(self, write_config: Write) -> None:
        """A camera with only a watch list gets every documented default."""
        config = load_config(write_config(MINIMAL))
        cam = config.camera("cryo")
        assert (cam.expected_frames, cam.min_frames, cam.quiet_minutes) == (10, 3, 30.0)
        assert cam.settle_seconds == 2.0
        assert cam.night_end == dt.time(10, 0)
        assert cam.patterns == ("*.fits", "*.fit", "*.fts", "*.fits.fz")
        assert cam.bias_values == ("bias", "zero", "bias frame")
        assert cam.calibrate.overscan.kind == "header"
        assert cam.calibrate.overscan.keyword == "BIASSEC"
        assert cam.calibrate.trim.keyword == "TRIMSEC"
        assert cam.combine.method == "average"
        assert (cam.combine.sigma_low, cam.combine.sigma_high) == (5.0, 5.0)
        assert (cam.combine.center, cam.combine.deviation, cam.combine.maxiters) == (
            "median",
            "mad_std",
            1,
        )
        assert config.service.mem_limit == 350_000_000
        assert config.site.timezone == "America/Chicago"
        assert config.site.night_rollover == dt.time(12, 0)

    def test_relative_paths_are_relative_to_the_config_file(self, write_config: Write) -> None:
        """state_dir, masters_dir, log_file and watch resolve against the file's directory."""
        path = write_config(MINIMAL)
        config = load_config(path)
        base = path.parent
        assert config.service.state_dir == base / "var/state"
        assert config.service.masters_dir == base / "var/masters"
        assert config.log_path == base / "var/log/biaswatch.jsonl"
        assert config.camera("cryo").watch == (base / "incoming/cryo",)

    def test_log_file_dash_means_stdout(self, write_config: Write) -> None:
        """log_file = "-" selects standard output."""
        config = load_config(write_config('[service]\nlog_file = "-"\n' + MINIMAL))
        assert config.log_path is None

    def test_defaults_are_inherited_and_overridden_per_camera(self, write_config: Write) -> None:
        """[defaults] and its sub-tables apply to every camera; a camera overrides single keys."""
        config = load_config(
            write_config(
                """
                [defaults]
                expected_frames = 7
                [defaults.combine]
                sigma_low = 3.0
                [cameras.a]
                watch = ["a"]
                [cameras.b]
                watch = ["b"]
                expected_frames = 12
                [cameras.b.combine]
                method = "median"
                [cameras.b.calibrate]
                overscan = "none"
                trim = "[1:2048, 1:2048]"
                """
            )
        )
        a, b = config.camera("a"), config.camera("b")
        assert (a.expected_frames, b.expected_frames) == (7, 12)
        assert (a.combine.method, b.combine.method) == ("average", "median")
        assert a.combine.sigma_low == b.combine.sigma_low == 3.0
        assert b.calibrate.overscan.kind == "none"
        assert b.calibrate.trim.section == Section(1, 2048, 1, 2048)

    def test_the_repository_config_loads(self) -> None:
        """The config.toml shipped at the repository root is valid."""
        config = load_config(Path(__file__).parents[2] / "config.toml")
        assert [c.name for c in config.cameras] == ["cryo", "te"]

    @pytest.mark.parametrize(
        ("line", "polling"), [("", None), ("polling = true", True), ("polling = false", False)]
    )
    def test_polling_unset_is_none(
        self, write_config: Write, line: str, polling: bool | None
    ) -> None:
        """polling left unset is None (decided per mount); true and false are kept as set."""
        config = load_config(write_config(MINIMAL + line + "\n"))
        assert config.camera("cryo").polling is polling


class TestErrors:
    def test_unknown_key_names_table_and_suggests(self, write_config: Write) -> None:
        """A misspelt key is an error naming its table, with the nearest valid key."""
        problems = problems_of(
            write_config, MINIMAL + '[cameras.cryo.calibrate]\noverscn = "none"\n'
        )
        assert any(
            "[cameras.cryo.calibrate] overscn: unknown key; did you mean 'overscan'?" in p
            for p in problems
        )

    def test_seed_typo_is_not_silently_ignored(self, write_config: Write) -> None:
        """The seed's signma_clip_dev_func-style typo in [defaults.combine] is refused."""
        problems = problems_of(write_config, '[defaults.combine]\ndeviaton = "std"\n' + MINIMAL)
        assert any(
            "[defaults.combine] deviaton: unknown key; did you mean 'deviation'" in p
            for p in problems
        )

    def test_unknown_top_level_table(self, write_config: Write) -> None:
        """An unknown top-level table is reported with a suggestion."""
        problems = problems_of(write_config, "[servce]\n" + MINIMAL)
        assert any("servce: unknown key; did you mean 'service'?" in p for p in problems)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[service]\nmem_limit = "lots"\n', "[service] mem_limit: 'lots' is not a size"),
            ('[service]\nlog_level = "loud"\n', "[service] log_level: Input should be"),
            (
                '[site]\ntimezone = "Mars/Olympus"\n',
                "[site] timezone: 'Mars/Olympus' is not an IANA",
            ),
            (
                '[site]\nnight_rollover = "25:00"\n',
                "[site] night_rollover: '25:00' is not a local time",
            ),
            (
                "[defaults]\nexpected_frames = 0\n",
                "[defaults] expected_frames: Input should be greater",
            ),
            (
                '[defaults]\nexpected_frames = "ten"\n',
                "[defaults] expected_frames: Input should be a valid integer",
            ),
            ("[defaults]\nmin_frames = 11\n", "min_frames (11) is more than expected_frames (10)"),
            (
                '[defaults.combine]\nmethod = "mean"\n',
                "[defaults.combine] method: Input should be 'average' or 'median'",
            ),
            (
                '[defaults.calibrate]\ntrim = "[1:20"\n',
                "[defaults.calibrate] trim: '[1:20' is not a FITS section",
            ),
            (
                '[defaults.calibrate]\noverscan_model = "spline"\n',
                "overscan_model: 'spline': use 'median' or 'poly:N'",
            ),
            (
                "[defaults.combine]\nmaxiters = 0\n",
                "[defaults.combine] maxiters: Input should be greater",
            ),
        ],
    )
    def test_bad_values_name_table_and_key(
        self, write_config: Write, text: str, expected: str
    ) -> None:
        """A wrong type or impossible value is an error naming its table and key."""
        problems = problems_of(write_config, text + MINIMAL)
        assert any(expected in p for p in problems), problems

    def test_defaults_problem_is_reported_once(self, write_config: Write) -> None:
        """A bad [defaults] value is reported under [defaults], not again for each camera."""
        problems = problems_of(
            write_config, '[defaults]\nexpected_frames = 0\n[cameras.b]\nwatch = ["b"]\n' + MINIMAL
        )
        assert len([p for p in problems if "expected_frames" in p]) == 1

    def test_every_problem_is_listed(self, write_config: Write) -> None:
        """Several problems in one file are all reported together."""
        problems = problems_of(
            write_config, '[service]\nmem_limt = 1\n[site]\ntimezone = "X"\n[cameras.c]\n'
        )
        assert len(problems) == 3
        assert any("[cameras.c] watch: Field required" in p for p in problems)

    def test_no_cameras(self, write_config: Write) -> None:
        """A config without cameras is an error that says what is missing."""
        problems = problems_of(write_config, "[service]\n")
        assert any("at least one [cameras.NAME]" in p for p in problems)

    def test_toml_syntax_error(self, write_config: Write) -> None:
        """Broken TOML is an error naming the file."""
        path = write_config("[cameras.cryo\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config(path)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("350MB", 350_000_000),
        ("2GB", 2_000_000_000),
        ("512MiB", 512 * 2**20),
        (350e6, 350_000_000),
        (1024, 1024),
        ("1.5 GB", 1_500_000_000),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    """Sizes accept decimal and binary units and plain byte counts."""
    assert parse_size(value) == size


class TestExecutor:
    def test_local_is_the_default_and_work_dir_follows_state_dir(self, write_config: Write) -> None:
        """Without [service] executor the combines are local; work_dir is <state_dir>/work."""
        config = load_config(write_config(MINIMAL))
        assert config.service.executor == "local" and config.service.fallback_local is False
        assert config.service.work == config.service.state_dir / "work"

    def test_dask_needs_a_scheduler(self, write_config: Write) -> None:
        """executor = "dask" without a scheduler address is refused with the key to add."""
        problems = problems_of(write_config, '[service]\nexecutor = "dask"\n' + MINIMAL)
        assert any("scheduler" in p and "tcp://" in p for p in problems)

    def test_dask_settings_and_a_shared_work_dir(self, write_config: Write) -> None:
        """A dask executor keeps its address; a relative work_dir is resolved like the others."""
        text = (
            '[service]\nexecutor = "dask"\nscheduler = "tcp://head:8786"\n'
            'fallback_local = true\nwork_dir = "shared/work"\n' + MINIMAL
        )
        path = write_config(text)
        service = load_config(path).service
        assert (service.executor, service.scheduler, service.fallback_local) == (
            "dask",
            "tcp://head:8786",
            True,
        )
        assert service.work == path.parent / "shared" / "work"

    def test_unknown_executor_is_refused(self, write_config: Write) -> None:
        """Only "local" and "dask" are executors."""
        problems = problems_of(write_config, '[service]\nexecutor = "slurm"\n' + MINIMAL)
        assert any("executor" in p for p in problems)


class TestOverlaps:
    """Outputs inside watched trees and cameras sharing a tree, compared after resolving."""

    def test_masters_dir_written_with_dotdot_into_a_watched_tree_is_refused(
        self, write_config: Write
    ) -> None:
        """masters_dir = "in/zz/../m/masters" lies inside watch "in/m": an error naming both."""
        path = write_config(
            '[service]\nmasters_dir = "in/zz/../m/masters"\n[cameras.cryo]\nwatch = ["in/m"]\n'
        )
        (problem,) = problems_of_path(path)
        base = path.parent
        assert f'[service] masters_dir: "{base}/in/zz/../m/masters"' in problem
        assert f'(resolved: "{base}/in/m/masters") is inside camera cryo' in problem
        assert f'watched directory "{base}/in/m"' in problem

    def test_masters_dir_through_a_symlink_into_a_watched_tree_is_refused(
        self, write_config: Write, tmp_path: Path
    ) -> None:
        """masters_dir under a symlink that points into the watched tree is an overlap."""
        (tmp_path / "in").mkdir()
        (tmp_path / "out").symlink_to(tmp_path / "in")
        path = write_config('[service]\nmasters_dir = "out/masters"\n' + WATCH_IN)
        (problem,) = problems_of_path(path)
        assert problem.startswith(f'{path}: [service] masters_dir: "{tmp_path}/out/masters"')
        assert f'(resolved: "{tmp_path}/in/masters") is inside camera cryo' in problem

    def test_a_watched_tree_inside_state_dir_is_refused(self, write_config: Write) -> None:
        """state_dir holding a watched directory is an overlap too (either inside the other)."""
        text = '[service]\nstate_dir = "data"\n[cameras.cryo]\nwatch = ["data/in"]\n'
        (problem,) = problems_of(write_config, text)
        assert "[service] state_dir:" in problem and "contains camera cryo's" in problem

    @pytest.mark.parametrize("key", ["state_dir", "work_dir"])
    def test_state_or_work_dir_inside_a_watched_tree_is_refused(
        self, write_config: Write, key: str
    ) -> None:
        """state_dir or work_dir inside a watched directory is a configuration error."""
        (problem,) = problems_of(write_config, f'[service]\n{key} = "in/sub/x"\n' + WATCH_IN)
        assert f"[service] {key}:" in problem and "is inside camera cryo's" in problem

    def test_two_cameras_on_one_directory_are_refused(self, write_config: Write) -> None:
        """Two cameras watching one directory (written differently) is an error naming both."""
        text = '[cameras.cryo]\nwatch = ["in"]\n[cameras.te]\nwatch = ["./x/../in/"]\n'
        (problem,) = problems_of(write_config, text)
        assert "[cameras.te] watch:" in problem and "is camera cryo's watched" in problem

    def test_a_camera_inside_another_cameras_tree_is_refused(self, write_config: Write) -> None:
        """A camera watching a directory inside another camera's tree is an error."""
        text = '[cameras.cryo]\nwatch = ["in"]\n[cameras.te]\nwatch = ["in/te"]\n'
        (problem,) = problems_of(write_config, text)
        assert "[cameras.te] watch:" in problem and "is inside camera cryo's" in problem

    def test_a_camera_whose_tree_holds_another_camera_is_refused(
        self, write_config: Write, tmp_path: Path
    ) -> None:
        """A camera watching a directory, through a symlink, above another camera's is an error."""
        (tmp_path / "in" / "te").mkdir(parents=True)
        (tmp_path / "link").symlink_to(tmp_path / "in")
        text = '[cameras.cryo]\nwatch = ["link/te"]\n[cameras.te]\nwatch = ["in"]\n'
        (problem,) = problems_of(write_config, text)
        assert "[cameras.te] watch:" in problem and "contains camera cryo's" in problem
        assert f'(resolved: "{tmp_path}/in/te")' in problem

    def test_neighbours_are_not_overlaps(self, write_config: Write) -> None:
        """Sibling directories, even sharing a name prefix, are apart and load."""
        text = (
            '[service]\nmasters_dir = "in-masters"\nstate_dir = "inx"\n'
            '[cameras.cryo]\nwatch = ["in/cryo"]\n[cameras.te]\nwatch = ["in/te"]\n'
        )
        config = load_config(write_config(text))
        assert [c.name for c in config.cameras] == ["cryo", "te"]

    def test_configured_paths_keep_their_written_form(
        self, write_config: Write, tmp_path: Path
    ) -> None:
        """Resolving is for the comparison only: a symlinked watch path is kept as written."""
        (tmp_path / "real").mkdir()
        (tmp_path / "in").symlink_to(tmp_path / "real")
        config = load_config(write_config(WATCH_IN))
        assert config.camera("cryo").watch == (tmp_path / "in",)


WATCH_IN = '[cameras.cryo]\nwatch = ["in"]\n'


def problems_of_path(path: Path) -> list[str]:
    """The problems load_config reports for the config file at ``path``."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


class TestAlerts:
    def test_alert_limits_have_defaults_and_take_sizes(self, write_config: Write) -> None:
        """[alerts] limits default to 30 s, 4 KiB, 2 running, 100 queued; sizes take units."""
        assert load_config(write_config(MINIMAL)).alerts.model_dump() == {
            "command": (),
            "url": None,
            "timeout_seconds": 30.0,
            "max_output_bytes": 4096,
            "max_running": 2,
            "max_queued": 100,
        }
        text = '[alerts]\nmax_output_bytes = "64KiB"\nmax_running = 4\n' + MINIMAL
        alerts = load_config(write_config(text)).alerts
        assert (alerts.max_output_bytes, alerts.max_running) == (65536, 4)

    def test_zero_running_or_queued_is_refused(self, write_config: Write) -> None:
        """max_running and max_queued below 1 would lose every alert: both refused."""
        problems = problems_of(
            write_config, "[alerts]\nmax_running = 0\nmax_queued = 0\n" + MINIMAL
        )
        assert [p.split("] ")[1].split(":")[0] for p in problems] == ["max_running", "max_queued"]


class TestMaxAgeDays:
    def test_default_is_thirty_days_and_a_camera_may_set_its_own(self, write_config: Write) -> None:
        """max_age_days defaults to 30; a camera's table overrides [defaults]."""
        text = "[defaults]\nmax_age_days = 60\n" + MINIMAL + "max_age_days = 7\n"
        text += '[cameras.te]\nwatch = ["incoming/te"]\n'
        config = load_config(write_config(text))
        assert config.camera("cryo").max_age_days == 7
        assert config.camera("te").max_age_days == 60
        assert load_config(write_config(MINIMAL)).camera("cryo").max_age_days == 30

    def test_max_age_days_must_be_positive(self, write_config: Write) -> None:
        """A zero max_age_days is refused, naming the key."""
        problems = problems_of(write_config, MINIMAL + "max_age_days = 0\n")
        assert any("max_age_days" in p for p in problems)
