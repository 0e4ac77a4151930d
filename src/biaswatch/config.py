"""The TOML configuration: typed, frozen, validated once at startup.

``load_config(path)`` is the only way in. It reads the file with tomllib,
merges ``[defaults]`` into every ``[cameras.NAME]`` table, validates every
value with pydantic (unknown keys are errors, never ignored: the seed recipe's
``signma_clip_dev_func`` typo is exactly the silent failure we refuse), and
raises one :class:`ConfigError` listing every problem as ``[table] key: why``
with the nearest valid key suggested for a typo.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from biaswatch.errors import ConfigError
from biaswatch.hooks import AlertsConfig, NotifyConfig
from biaswatch.settings import (
    DEFAULT_DATE_KEYWORDS,
    DEFAULT_DATE_RANGE,
    BiasWhen,
    Bytes,
    CalibrateSettings,
    Clock,
    CombineSettings,
    DateKeywords,
    DateRangeSetting,
    Keywords,
    QcSettings,
    _Frozen,
)
from biaswatch.system.overlaps import Resolver, overlap_problems

# Reading and calibrating a frame peaks at about 16 bytes per pixel in the service:
# measured 4.0x the data of a 4096 x 4128 float32 raw (270 MB for 68 MB) and 7.0x a
# uint16 one (237 MB for 34 MB), VmHWM growth of read_frame + examine, 2026-12-04.
# So mem_limit // 4 keeps a float32 frame at the limit within mem_limit, and the
# default 350 MB admits 87 MB: both 4k x 4k frames, not a header's 3.2 GB.
FRAME_SHARE = 4


# "host:port" or "[v6 address]:port".
_HOST_PORT = r"(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}"


class ServiceConfig(_Frozen):
    """``[service]``: where state, masters and logs go, and the memory budget."""

    state_dir: Path = Path("var/state")
    masters_dir: Path = Path("var/masters")
    log_file: str = "var/log/biaswatch.jsonl"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mem_limit: Bytes = 350_000_000
    # How often the main loop re-examines pending files; 0.5 s keeps the delay
    # from "last byte written" to "ingested" well under settle_seconds + 1 s.
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # Memory all concurrent combines may use together: each takes mem_limit, so this
    # allows max_combine_memory // mem_limit at once. Unset: one at a time.
    max_combine_memory: Bytes | None = None
    # Every watched directory is listed against the catalog this often: events are
    # only hints (inotify overflows, reliability.md W1; polling misses, W5-W6).
    rescan_minutes: float = Field(default=10.0, gt=0)
    # A failed combine is tried again after this, doubling each time (3 tries in
    # all, service/combines.py): time to mend a full disk or a missing mount.
    combine_retry_seconds: float = Field(default=60.0, gt=0)
    # A camera whose files give no answer this long is reported stalled (a hung
    # mount); 60 s is the NFS client's own retransmit timeout over TCP (nfs(5),
    # "timeo=600" tenths of a second), after which the kernel logs "not responding".
    stall_seconds: float = Field(default=60.0, gt=0)
    # Calibrated frames go here; unset: <state_dir>/work. With executor = "dask" it
    # must be on storage every worker sees at the same path, like masters_dir.
    work_dir: Path | None = None
    # Where calibrations and combines run: "local" (worker processes on this machine)
    # or "dask" (tasks on the distributed cluster at `scheduler`; combine/dask_executor.py).
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None
    # With dask: a scheduler unreachable at start falls back to local workers (with a
    # warning) instead of stopping the service with an error.
    fallback_local: bool = False
    # With scheduler = "tls://...": Dask's TLS (distributed.security.Security). The CA
    # that signed the scheduler's and workers' certificates, and this service's own
    # certificate and key (the key may sit in the certificate file: leave it unset).
    # Relative paths are relative to this file; each must be readable at load.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Prometheus metrics (service/metrics.py): a textfile for node_exporter's textfile
    # collector, e.g. /var/lib/prometheus/node-exporter/biaswatch.prom (it reads only
    # *.prom files); unset: none. Relative to this file.
    metrics_file: Path | None = None
    # How often the file is rewritten: 15 s is Prometheus's usual scrape_interval
    # (its default is 1 min), so each scrape sees fresh values at a few ms of work each.
    metrics_seconds: float = Field(default=15.0, gt=0, le=3600)
    # "host:port" of an HTTP /metrics endpoint, for installs without the unit's
    # PrivateNetwork=yes; 9464 is the OpenTelemetry Prometheus exporter's default port.
    metrics_address: str | None = None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _budget_fits_one(self) -> ServiceConfig:
        if self.max_combine_memory is not None and self.max_combine_memory < self.mem_limit:
            raise ValueError(
                f"max_combine_memory ({self.max_combine_memory} bytes) is smaller than "
                f"mem_limit ({self.mem_limit} bytes): not even one combine would fit"
            )
        return self

    @field_validator("metrics_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_HOST_PORT, value):
            raise ValueError(f'{value!r} is not host:port, e.g. "127.0.0.1:9464"')
        return value

    @model_validator(mode="after")
    def _metrics_file_is_prom(self) -> ServiceConfig:
        if self.metrics_file is not None and self.metrics_file.suffix != ".prom":
            # node_exporter's textfile collector reads only files named *.prom.
            raise ValueError(f"metrics_file {str(self.metrics_file)!r} must end in .prom")
        return self

    @model_validator(mode="after")
    def _dask_has_scheduler(self) -> ServiceConfig:
        if self.executor == "dask" and not self.scheduler:
            raise ValueError('executor = "dask" needs scheduler = "tcp://host:8786"')
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> ServiceConfig:
        tls = self.scheduler is not None and self.scheduler.startswith("tls://")
        given = [k for k in _TLS_FILES if getattr(self, k) is not None]
        if tls and (self.tls_ca_file is None or self.tls_cert_file is None):
            raise ValueError(
                f"scheduler = {self.scheduler!r} uses TLS: set tls_ca_file (the CA that "
                "signed the cluster's certificates) and tls_cert_file (this service's "
                "certificate; tls_key_file too unless the key is in that file)"
            )
        if given and not tls:
            # Refused, not ignored: the operator asked for TLS and would not get it.
            raise ValueError(
                f"{', '.join(given)} given but scheduler is {self.scheduler!r}: "
                'TLS needs scheduler = "tls://host:8786"'
            )
        return self

    @property
    def work(self) -> Path:
        """Where calibrated frames are written."""
        return self.work_dir if self.work_dir is not None else self.state_dir / "work"

    @property
    def combine_slots(self) -> int:
        """How many combines may run at once within max_combine_memory."""
        budget = self.max_combine_memory or self.mem_limit
        return max(1, budget // self.mem_limit)


# The [service] keys naming TLS files: resolved against the config file, read at load.
_TLS_FILES = ("tls_ca_file", "tls_cert_file", "tls_key_file")


class SiteConfig(_Frozen):
    """``[site]``: the site's timezone and when the night label rolls over."""

    timezone: str = "America/Chicago"
    night_rollover: Clock = dt.time(12, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA timezone name") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The timezone object."""
        return ZoneInfo(self.timezone)


class CameraSettings(_Frozen):
    """Everything a camera may set; ``[defaults]`` holds the shared values."""

    patterns: tuple[str, ...] = ("*.fits", "*.fit", "*.fts", "*.fits.fz")
    imagetyp_keyword: str = "IMAGETYP"
    bias_values: tuple[str, ...] = ("bias", "zero", "bias frame")
    settle_seconds: float = Field(default=2.0, ge=0, le=3600)
    expected_frames: int = Field(default=10, ge=1)
    min_frames: int = Field(default=3, ge=1)
    quiet_minutes: float = Field(default=30.0, gt=0)
    night_end: Clock = dt.time(10, 0)
    # A file that stays an incomplete FITS this long is rejected as truncated;
    # until then it is assumed to be still on its way (a slow network copy).
    max_incomplete_minutes: float = Field(default=10.0, gt=0)
    # The most data (bytes, decompressed) a frame's headers may announce; larger
    # files are rejected before anything is read. Unset: mem_limit // FRAME_SHARE.
    max_frame_bytes: Bytes | None = None
    # Symlinks whose target lies outside the camera's watch directories are
    # rejected unless this is true; links within them are always followed.
    follow_symlinks: bool = False
    # None: poll where a watch directory is on a network filesystem, where
    # inotify sees nothing written by other machines (mounts.use_polling).
    polling: bool | None = None
    # watchdog's PollingObserver defaults to 1 s and stats the whole tree each
    # time (watchdog #577); 10 s is gentle on NFS and still well inside settle.
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    hdu: int | str | None = None
    # DATE-OBS outside this range is not believed: the night comes from the file's
    # mtime, with a warning (a header dated 9999 must not make a night of 9999).
    date_range: DateRangeSetting = DEFAULT_DATE_RANGE
    # Header rules that make a frame a bias, all of which must hold (a list: any of
    # its values); unset: imagetyp_keyword must be one of bias_values.
    bias_when: BiasWhen | None = None
    # Where the observation time is read, the first keyword that parses winning.
    date_keywords: DateKeywords = DEFAULT_DATE_KEYWORDS
    # Header keywords whose values also split sets (readout speed, gain): the bias
    # level depends on them. Binning always splits sets.
    group_by: Keywords = ()
    # `masters --for` never picks a master whose night began further than this from
    # the frame's time. Gemini's calibration association caps bias age at 90 days and
    # ESO's widens from 1 day to 1 week (issue 15); 30 days lies between: a camera
    # making biases nightly has a month of masters to choose from, and one whose last
    # bias is older is a fault to see ("no master: ...") rather than silently bridge.
    max_age_days: float = Field(default=30.0, gt=0)
    calibrate: CalibrateSettings = CalibrateSettings()
    combine: CombineSettings = CombineSettings()
    qc: QcSettings = QcSettings()

    @field_validator("bias_values")
    @classmethod
    def _lower_values(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value)

    @field_validator("imagetyp_keyword")
    @classmethod
    def _keyword(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,8}", value):
            raise ValueError(f"{value!r} is not a FITS keyword (1-8 of A-Z 0-9 _ -)")
        return value.upper()

    @field_validator("patterns")
    @classmethod
    def _some_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one file pattern")
        return value

    @model_validator(mode="after")
    def _frames_consistent(self) -> CameraSettings:
        if self.min_frames > self.expected_frames:
            raise ValueError(
                f"min_frames ({self.min_frames}) is more than expected_frames "
                f"({self.expected_frames})"
            )
        return self


class CameraConfig(CameraSettings):
    """One ``[cameras.NAME]`` table after ``[defaults]`` were merged in."""

    name: str
    watch: tuple[Path, ...] = Field(min_length=1)


class Config(_Frozen):
    """The whole validated configuration."""

    path: Path
    service: ServiceConfig
    site: SiteConfig
    alerts: AlertsConfig = AlertsConfig()
    notify: NotifyConfig = NotifyConfig()
    cameras: tuple[CameraConfig, ...]

    def camera(self, name: str) -> CameraConfig:
        """The camera called ``name``; ConfigError naming the known ones otherwise."""
        for camera in self.cameras:
            if camera.name == name:
                return camera
        known = ", ".join(c.name for c in self.cameras)
        raise ConfigError([f"no camera {name!r} in {self.path} (cameras: {known})"])

    @property
    def log_path(self) -> Path | None:
        """The JSON log file, or None for standard output."""
        return None if self.service.log_file == "-" else Path(self.service.log_file)


_M = TypeVar("_M", bound=BaseModel)
_TOP_LEVEL = {"service", "site", "alerts", "notify", "defaults", "cameras"}


def load_config(path: Path | str, resolve: Resolver | None = None) -> Config:
    """Read, merge, validate and resolve the config file at ``path``.

    ``resolve`` resolves the paths compared for overlaps (system/overlaps.py): on
    threads unless given; ``status`` asks forked children, so a hung mount cannot
    keep it from exiting.

    Raises:
        ConfigError: listing every problem, each naming its table and key.
    """
    path = Path(path).absolute()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    problems: list[str] = []
    config = _build(raw, path, problems, resolve)
    if problems or config is None:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return config


def _build(
    raw: dict[str, Any], path: Path, problems: list[str], resolve: Resolver | None = None
) -> Config | None:
    for key in sorted(set(raw) - _TOP_LEVEL):
        problems.append(_unknown("", key, _TOP_LEVEL))
    service = _validate(ServiceConfig, raw.get("service", {}), "service", problems)
    site = _validate(SiteConfig, raw.get("site", {}), "site", problems)
    alerts = _validate(AlertsConfig, raw.get("alerts", {}), "alerts", problems)
    notify = _validate(NotifyConfig, raw.get("notify", {}), "notify", problems)
    defaults_raw = raw.get("defaults", {})
    defaults_problems: list[str] = []
    _validate(CameraSettings, defaults_raw, "defaults", defaults_problems)
    camera_problems: list[str] = []
    cameras = _build_cameras(raw.get("cameras"), defaults_raw, camera_problems)
    problems.extend(defaults_problems)
    problems.extend(_not_inherited(camera_problems, defaults_problems))
    if service is None or site is None or alerts is None or notify is None or problems:
        return None
    base = path.parent
    service = service.model_copy(
        update={
            "state_dir": relative_to_config(base, service.state_dir),
            "masters_dir": relative_to_config(base, service.masters_dir),
            "work_dir": None
            if service.work_dir is None
            else relative_to_config(base, service.work_dir),
            "metrics_file": None
            if service.metrics_file is None
            else relative_to_config(base, service.metrics_file),
            "log_file": service.log_file
            if service.log_file == "-"
            else str(relative_to_config(base, Path(service.log_file))),
        }
        | {
            key: relative_to_config(base, getattr(service, key))
            for key in _TLS_FILES
            if getattr(service, key) is not None
        }
    )
    problems.extend(_unreadable_tls_files(service))
    if problems:
        return None
    cameras = [
        c.model_copy(
            update={
                "watch": tuple(relative_to_config(base, w) for w in c.watch),
                "max_frame_bytes": c.max_frame_bytes or service.mem_limit // FRAME_SHARE,
            }
        )
        for c in cameras
    ]
    problems.extend(_overlaps(service, cameras, resolve))
    if problems:
        return None
    return Config(
        path=path,
        service=service,
        site=site,
        alerts=alerts,
        notify=notify,
        cameras=tuple(cameras),
    )


def _unreadable_tls_files(service: ServiceConfig) -> list[str]:
    """A problem for each TLS file that cannot be read now (it would fail at connect)."""
    problems = []
    for key in _TLS_FILES:
        path = getattr(service, key)
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            problems.append(f"[service] {key}: cannot read {path}: {exc.strerror or exc}")
    return problems


def _build_cameras(tables: object, defaults_raw: object, problems: list[str]) -> list[CameraConfig]:
    if not isinstance(tables, Mapping) or not tables:
        problems.append("[cameras] needs at least one [cameras.NAME] table with a watch list")
        return []
    defaults = defaults_raw if isinstance(defaults_raw, Mapping) else {}
    cameras = []
    for name, table in tables.items():
        where = f"cameras.{name}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            problems.append(f"[{where}] camera names use letters, digits, '_', '.', '-' only")
            continue
        if not isinstance(table, Mapping):
            problems.append(f"[{where}] must be a table")
            continue
        merged = _merge(defaults, table) | {"name": name}
        camera = _validate(CameraConfig, merged, where, problems)
        if camera is not None:
            cameras.append(camera)
    return cameras


def _not_inherited(camera_problems: list[str], defaults_problems: list[str]) -> list[str]:
    """Drop a camera's problems that only repeat a problem of ``[defaults]``."""
    inherited = {p.removeprefix("[defaults") for p in defaults_problems}
    return [p for p in camera_problems if re.sub(r"^\[cameras\.[^].]+", "", p) not in inherited]


# Tables that are one setting, not a sub-table of settings: a camera's replaces the
# default's whole (a camera's bias_when must not inherit the default's rules).
_WHOLE_TABLES = {"bias_when"}


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, one level deep for sub-tables."""
    merged = dict(base)
    for key, value in override.items():
        whole = key in _WHOLE_TABLES
        if not whole and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _validate(model: type[_M], data: object, table: str, problems: list[str]) -> _M | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(model, exc, table))
        return None


def _describe(model: type[BaseModel], exc: ValidationError, table: str) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key, subtables = loc[-1] if loc else "", loc[:-1]
        where = ".".join([table, *subtables])
        if error["type"] == "extra_forbidden":
            lines.append(_unknown(where, key, _fields_at(model, subtables)))
        else:
            message = error["msg"].removeprefix("Value error, ")
            shown = loc and error["type"] != "missing"
            given = f" (got {error['input']!r})" if shown else ""
            lines.append(f"[{where}] {key}: {message}{given}" if key else f"[{where}] {message}")
    return lines


def _fields_at(model: type[BaseModel], subtables: list[str]) -> set[str]:
    for name in subtables:
        annotation = model.model_fields[name].annotation if name in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return set()
        model = annotation
    return set(model.model_fields) - {"name"}


def _unknown(where: str, key: str, valid: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    table = f"[{where}] " if where else ""
    return f"{table}{key}: unknown key{hint}"


def _overlaps(
    service: ServiceConfig, cameras: list[CameraConfig], resolve: Resolver | None
) -> list[str]:
    """Outputs inside watched trees, and cameras sharing a tree (system/overlaps.py)."""
    outputs = [
        ("[service] masters_dir", service.masters_dir),
        ("[service] state_dir", service.state_dir),
    ]
    # Unset, work_dir is inside state_dir and the check of state_dir covers it.
    if service.work_dir is not None:
        outputs.append(("[service] work_dir", service.work_dir))
    watches = [(c.name, w) for c in cameras for w in c.watch]
    return overlap_problems(outputs, watches, resolve)


def relative_to_config(base: Path, path: Path) -> Path:
    """``path`` as the config means it: ``~`` expanded, relative ones from the config's folder."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).absolute()
