"""``biaswatch combine``: the daemon's path from frames to master, once, on the command line.

Raw frames go through the same ingest as in the service (read, classify, date,
calibrate with the camera's settings); ``--calibrated`` frames go straight to the
combine. The combine, the master's header and the never-overwriting write are the
service's own functions; only the catalog is left out.

What the command imports is chosen for its wall time (issue 14): the modules of the
combine, the master file and the configuration are imported inside the functions,
after the inputs' digests have started on a thread (InputDigests), so hashing 10 x 67 MB
(0.4-0.5 s of sha256) overlaps the imports and the combine's band reads instead of
preceding them; the raw frames' ingest (ccdproc, astropy.nddata) loads only without
``--calibrated``. tests/unit/test_imports.py guards what ``--calibrated`` loads.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from biaswatch.cli.common import EX_NOTFOUND, fail
from biaswatch.errors import CombineFailed, ConfigError

if TYPE_CHECKING:  # imported where used: see the module's docstring
    from biaswatch.catalog.rows import FrameRecord
    from biaswatch.combine.planes import SegmentHDU
    from biaswatch.config import CameraConfig, SiteConfig
    from biaswatch.settings import CombineSettings


def combine_command(args: argparse.Namespace) -> int:
    """Build the request from the options and combine; 1 with the reason if it fails."""
    # A one-shot command: its summary on stdout, only warnings (a frame's date taken
    # from its mtime, say) on stderr, not the service's per-frame info events.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:  # a typo, not a frame to judge: one line, before any work
        return fail(args, EX_NOTFOUND, f"no such file: {', '.join(missing)}", missing=missing)
    # Calibrated inputs are hashed as they are (raw ones by their ingest): started first.
    digests = InputDigests(args.files) if args.calibrated else None
    try:
        made = combine_once(_request(args), digests)
    except (CombineFailed, ValueError) as exc:
        return fail(args, EX_NOTFOUND, str(getattr(exc, "reason", exc)))
    finally:
        if digests is not None:
            digests.close()
    print(json.dumps(made.as_json()) if args.json else made.line())
    return 0


def _request(args: argparse.Namespace) -> Request:
    """The options as a request; ValueError for a bad size or setting."""
    from biaswatch.config import ServiceConfig, SiteConfig, load_config
    from biaswatch.settings import CombineSettings, parse_size
    from biaswatch.system.overlaps import compared_as_written

    # Only the camera's settings are wanted: the watch paths are compared as written, so a
    # hung camera mount cannot hold a one-off combine (and the digests' thread runs already).
    config = load_config(args.config, compared_as_written) if args.config is not None else None
    if args.camera is not None and config is None:
        # combine does not try ./config.toml (cli/common.py config_option): name the ways.
        raise ConfigError(
            ["--camera needs a config: --config, $BIASWATCH_CONFIG or /etc/biaswatch/config.toml"]
        )
    configured = config.camera(args.camera) if config and args.camera else None
    camera = camera_for(configured, args.files)
    overrides: dict[str, object] = {}
    if args.method is not None:
        overrides["method"] = args.method
    if args.sigma is not None:
        overrides["sigma_low"], overrides["sigma_high"] = args.sigma
    service = config.service if config else ServiceConfig()
    return Request(
        files=tuple(args.files),
        output=args.output,
        camera=camera,
        site=config.site if config else SiteConfig(),
        # Validated again: model_copy(update=...) would skip validation.
        combine=CombineSettings.model_validate({**camera.combine.model_dump(), **overrides}),
        mem_limit=parse_size(args.mem_limit) if args.mem_limit else service.mem_limit,
        calibrated=args.calibrated,
    )


@dataclass(frozen=True, slots=True)
class Request:
    """What to combine and how."""

    files: tuple[Path, ...]
    output: Path
    camera: CameraConfig
    site: SiteConfig
    combine: CombineSettings
    mem_limit: int
    calibrated: bool


@dataclass(frozen=True, slots=True)
class OneShotMaster:
    """What one ``biaswatch combine`` made."""

    master: Path
    frames: int
    seconds: float

    def line(self) -> str:
        """The one-line summary printed without ``--json``."""
        return f"combined {self.frames} frames into {self.master} in {self.seconds:.2f} s"

    def as_json(self) -> dict[str, object]:
        """The summary as ``--json`` prints it."""
        return {
            "master": str(self.master),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
        }


def combine_once(request: Request, digests: InputDigests | None = None) -> OneShotMaster:
    """Combine and write the master; returns what was made.

    ``digests`` of the calibrated inputs, when already started; else hashed here.

    Raises:
        CombineFailed: a frame cannot be used, the output exists, or the combine fails.
    """
    from biaswatch.combine.child import CombineJob, finish_segments
    from biaswatch.combine.master_file import MasterInfo
    from biaswatch.combine.segments import combine_segments
    from biaswatch.publish.master import give_final_name, input_names
    from biaswatch.rules.sets import input_digest

    if request.output.exists():
        raise CombineFailed(f"{request.output} exists; biaswatch never overwrites a master")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="biaswatch-combine-"))
        label: str | None = None  # the service's configuration label, known from raw frames
        records: list[FrameRecord] = []
        if request.calibrated:
            inputs, night = list(request.files), "-"
            pending = digests or stack.enter_context(closing(InputDigests(request.files)))
        else:
            records = _calibrate(request, Path(work))
            inputs = [Path(str(r.calibrated)) for r in records]
            night, label = str(records[0].night), _one_configuration(records)
        segments = combine_segments(inputs, request.combine, request.mem_limit)
        # Raw frames were hashed by their ingest; calibrated ones meanwhile, on a thread.
        hashes = [str(r.sha256) for r in records] if records else pending.hexdigests()
        info = MasterInfo(
            camera=request.camera.name,
            night=night,
            sequence=1,
            geometry=label or _geometry([segment for segment, _ in segments]),
            raw_names=input_names([str(f) for f in request.files]),
            settings=request.combine,
            mem_limit=request.mem_limit,
            input_digest=input_digest(hashes),
        )
        # The service's own header, QC cards and layout (MASK, UNCERT, one HDU per
        # segment): the job is the child's, with no set behind it.
        job = CombineJob(0, tuple(str(p) for p in inputs), str(request.output), info)
        result = finish_segments(job, segments, start)
        assert result.temporary is not None  # finish_segments raises when it cannot write
        give_final_name(Path(result.temporary), request.output)
    return OneShotMaster(request.output, len(inputs), time.perf_counter() - start)


def _one_configuration(records: list[FrameRecord]) -> str:
    """The configuration label the service gives these frames; they must share one.

    The service never combines frames of two configurations (segments, binning,
    group_by values): neither does the command.
    """
    labels = sorted({str(r.geometry) for r in records})
    if len(labels) > 1:
        raise CombineFailed(f"the frames are of {len(labels)} configurations: {', '.join(labels)}")
    return labels[0]


def _geometry(segments: Sequence[SegmentHDU]) -> str:
    """BWGEOM of a master of calibrated files (no raw header to label them by): the shape."""
    rows, cols = segments[0].shape
    return f"{cols}x{rows}" if len(segments) == 1 else f"{cols}x{rows}x{len(segments)}"


def _calibrate(request: Request, work: Path) -> list[FrameRecord]:
    from biaswatch.frames.read import ingest  # ccdproc and astropy.nddata: raw frames only
    from biaswatch.names import for_terminal

    records = [ingest(f, request.camera, request.site, work) for f in request.files]
    unusable = [r for r in records if r.status != "valid"]
    if unusable:
        reasons = "; ".join(f"{for_terminal(Path(r.path).name)}: {r.reason}" for r in unusable)
        raise CombineFailed(f"{len(unusable)} of {len(records)} frames cannot be used: {reasons}")
    return records


class InputDigests:
    """The sha256 of each input file, computed on one background thread, in order.

    Why a thread: hashlib and file reads release the GIL, so the hashing runs on the
    second core while the main thread imports and reads bands (the combine's kernel
    takes both cores only for a third of the command). One thread, not one per file:
    on 2 cores a second hashing thread would only take the kernel's core.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-digest")
        self._futures: list[Future[str]] = [self._pool.submit(file_sha256, f) for f in files]

    def hexdigests(self) -> list[str]:
        """Every input's digest, waiting for the thread; CombineFailed if one cannot be read."""
        try:
            return [future.result() for future in self._futures]
        except OSError as exc:
            raise CombineFailed(f"cannot read {exc.filename}: {exc.strerror}") from exc

    def close(self) -> None:
        """Stop hashing the files not started yet (after a failure) and end the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (a few MB of memory at most)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        block = bytearray(1 << 20)
        view = memoryview(block)
        while count := f.readinto(block):
            digest.update(view[:count])
    return digest.hexdigest()


def camera_for(config_camera: CameraConfig | None, files: Sequence[Path]) -> CameraConfig:
    """The configured camera, or one with every default (watching the files' directory)."""
    from biaswatch.config import CameraConfig

    if config_camera is not None:
        return config_camera
    return CameraConfig(name="cli", watch=(files[0].parent.absolute(),))
