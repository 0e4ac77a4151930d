"""Hostile input on the real service: bad pixels, lying headers, mixed shapes, writers that
rename, path-like header strings and overlapping directories. Raw files are never touched."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from biaswatch.sections import Section
from biaswatch.testing.camera import Geometry
from biaswatch.testing.fits import DType, fits_bytes, write_in_pieces
from biaswatch.testing.helpers import CRYO_GEOMETRY, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, master_data, masters_in, running_service

# Every frame is dated in one night that has not ended whenever the suite runs, so
# sets complete on expected_frames and never on the clock. (A real "tonight" has
# already ended between night_end 10:00 and the 12:00 rollover, Chicago, and a set
# would then be combined as soon as it held min_frames.) 02:00 UTC is 20:00 CST.
EVENING = dt.datetime(2030, 1, 15, 2, 0, tzinfo=dt.UTC)
NIGHT = "2030-01-14"
CRYO_LABEL = "56x40-1x1"  # CRYO_GEOMETRY: 56 columns x 40 rows, unbinned
PIXELS = CRYO_GEOMETRY.rows * CRYO_GEOMETRY.cols


def evening() -> dt.datetime:
    """A time in EVENING's hour that moves with the real clock, so file names differ."""
    return EVENING + dt.timedelta(seconds=time.time() % 3600)


def frame(seed: int, *, dtype: DType = "uint16", header: dict[str, object] | None = None) -> bytes:
    """A raw cryo bias (CRYO_GEOMETRY) dated this evening; ``seed`` makes its pixels unique."""
    date_obs = evening().replace(tzinfo=None).isoformat(timespec="milliseconds")
    return fits_bytes(
        shape=CRYO_GEOMETRY.shape,
        dtype=dtype,
        seed=seed,
        date_obs=date_obs,
        header=header,
    )


def with_pixels(content: bytes, change: Callable[[np.ndarray], None]) -> bytes:
    """The FITS bytes with ``change`` applied to the primary image in place."""
    with fits.open(io.BytesIO(content)) as hdul:
        data = np.array(hdul[0].data)
        change(data)
        hdul[0].data = data
        out = io.BytesIO()
        hdul.writeto(out)
    return out.getvalue()


def with_card(content: bytes, keyword: str, value: int) -> bytes:
    """The FITS bytes with the value of ``keyword``'s first card replaced, bytes elsewhere kept."""
    start = content.find(f"{keyword:<8}= ".encode())
    assert 0 <= start < 2880, f"{keyword} is not in the first header block"
    card = f"{keyword:<8}= {value:>20}".encode()  # fixed format: value in columns 11-30
    return content[:start] + card + content[start + len(card) :]


def put(path: Path, content: bytes) -> Path:
    """Write ``content`` under its final name in three pieces, as a camera streams a readout."""
    write_in_pieces(path, content, pieces=3, delay=0.05)
    return path


def fingerprints(paths: Iterable[Path]) -> dict[str, tuple[str, int]]:
    """Each file's content hash and mtime, by path: to prove raw files untouched."""
    return {
        str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths
    }


def tree(root: Path, skip: Iterable[Path] = ()) -> set[str]:
    """Every file, directory and link below ``root`` (relative), leaving out ``skip`` trees."""
    skipped = tuple(skip)
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if not any(p == s or s in p.parents for s in skipped)
    }


def judged(config: Path, count: int) -> None:
    """Wait until ``count`` frames have a verdict (anything but 'seen')."""
    sql = "SELECT * FROM frames WHERE status != 'seen'"
    wait_until(lambda: len(catalog_rows(config, sql)) >= count, 60, f"{count} frames judged")


def by_name(config: Path) -> dict[str, sqlite3.Row]:
    """The frames table keyed by file name."""
    return {Path(r["path"]).name: r for r in catalog_rows(config, "SELECT * FROM frames")}


def inputs_of(master: Path) -> list[str]:
    """The raw file names a master's IMCMBnnn cards list, sorted."""
    header = fits.getheader(master)
    return sorted(str(v) for k, v in header.items() if k.startswith("IMCMB"))


def names(paths: Iterable[Path]) -> list[str]:
    """File names, sorted."""
    return sorted(p.name for p in paths)


def test_frames_with_nan_or_inf_are_rejected_with_the_count_and_the_rest_combine(
    tmp_path: Path,
) -> None:
    """Float frames holding NaN or inf are rejected with the bad-pixel count; the good 5 combine."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"

    def all_nan(data: np.ndarray) -> None:
        data[:] = np.nan

    def few_inf(data: np.ndarray) -> None:
        data[3, 4] = data[10, 20] = data[39, 0] = np.inf
        data[0, 0] = -np.inf

    def nan_in_overscan(data: np.ndarray) -> None:
        data[5:7, -1] = np.nan  # the last column is overscan: still a broken writer

    bad = {
        "all_nan.fits": (all_nan, f"{PIXELS} of {PIXELS} pixels are NaN or infinite"),
        "few_inf.fits": (few_inf, f"4 of {PIXELS} pixels are NaN or infinite"),
        "nan_in_overscan.fits": (nan_in_overscan, f"2 of {PIXELS} pixels are NaN or infinite"),
    }
    with running_service(config) as service:
        written = [
            put(incoming / name, with_pixels(frame(seed, dtype="float32"), change))
            for seed, (name, (change, _)) in enumerate(bad.items(), start=10)
        ]
        good = write_frames(config, "cryo", 5, now=evening)
        before = fingerprints(written + good)
        (published,) = service.wait_event("master.published")
        judged(config, len(bad) + len(good))
        rejected = {e["file"]: e["reason"] for e in service.events("frame.rejected")}
        status = service.stop()[0]
    assert status == 0
    found = by_name(config)
    for name, (_, reason) in bad.items():
        assert (found[name]["status"], found[name]["reason"]) == ("rejected", reason)
        assert rejected[str(incoming / name)] == reason
    assert {found[p.name]["status"] for p in good} == {"combined"}
    master = tmp_path / "masters" / "cryo" / NIGHT / f"bias_cryo_{NIGHT}_01_{CRYO_LABEL}.fits"
    assert (Path(published["path"]), masters_in(tmp_path / "masters")) == (master, [master])
    assert fits.getheader(master)["NCOMBINE"] == 5
    assert inputs_of(master) == names(good)
    assert np.isfinite(master_data(master)).all()
    assert fingerprints(written + good) == before
    assert names(incoming.iterdir()) == names(written + good)


def test_header_bitpix_larger_than_the_data_is_refused_and_never_combined(tmp_path: Path) -> None:
    """A BITPIX announcing more data bytes than were written is refused as truncated, not combined.

    From the bytes alone such a file cannot be told from a transfer cut short, so it
    waits max_incomplete_minutes like one and is then rejected with the byte counts.
    """
    config = write_config(tmp_path, expected_frames=5, max_incomplete_minutes=0.05)
    incoming = tmp_path / "incoming" / "cryo"
    # 2240 pixels: 4480 bytes at 16 bits, padded to 2 blocks of 2880 (FITS 4.0 sect. 3.1);
    # float32 data is 8960 bytes, padded to 4 blocks.
    lies = {
        "int16_says_32.fits": (frame(20), 32, f"5760 of {4 * PIXELS}"),
        "int16_says_m64.fits": (frame(21), -64, f"5760 of {8 * PIXELS}"),
        "float32_says_m64.fits": (frame(22, dtype="float32"), -64, f"11520 of {8 * PIXELS}"),
    }
    with running_service(config) as service:
        written = [
            put(incoming / name, with_card(c, "BITPIX", b)) for name, (c, b, _) in lies.items()
        ]
        good = write_frames(config, "cryo", 5, now=evening)
        before = fingerprints(written + good)
        (published,) = service.wait_event("master.published")
        judged(config, len(lies) + len(good))
        status = service.stop()[0]
    assert status == 0
    found = by_name(config)
    for name, (_, _, counts) in lies.items():
        reason = f"truncated: primary HDU data: {counts} bytes after waiting 0.05 min"
        assert (found[name]["status"], found[name]["reason"]) == ("rejected", reason)
        assert found[name]["set_id"] is None
    (master,) = masters_in(tmp_path / "masters")
    assert Path(published["path"]) == master
    assert (fits.getheader(master)["NCOMBINE"], inputs_of(master)) == (5, names(good))
    assert fingerprints(written + good) == before
    assert names(incoming.iterdir()) == names(written + good)


def test_header_bitpix_smaller_than_the_data_is_refused_and_never_combined(
    tmp_path: Path,
) -> None:
    """A BITPIX announcing fewer data bytes than were written is rejected, never combined."""
    config = write_config(tmp_path, expected_frames=5, max_incomplete_minutes=0.05)
    incoming = tmp_path / "incoming" / "cryo"
    lies = {
        "uint32_says_16.fits": with_card(frame(30, dtype="uint32"), "BITPIX", 16),
        "float32_says_16.fits": with_card(frame(31, dtype="float32"), "BITPIX", 16),
    }
    with running_service(config) as service:
        written = [put(incoming / name, content) for name, content in lies.items()]
        good = write_frames(config, "cryo", 5, now=evening)
        before = fingerprints(written + good)
        judged(config, len(lies) + len(good))
        found = by_name(config)
        assert {found[name]["status"] for name in lies} == {"rejected"}, [
            (name, found[name]["status"]) for name in lies
        ]
        (published,) = service.wait_event("master.published")
        status = service.stop()[0]
    assert status == 0
    assert fits.getheader(published["path"])["NCOMBINE"] == 5
    assert inputs_of(Path(published["path"])) == names(good)
    assert fingerprints(written + good) == before


def test_two_shapes_in_one_night_make_two_masters(tmp_path: Path) -> None:
    """Frames of two shapes written together make two sets and two masters, each of one shape."""
    config = write_config(tmp_path, expected_frames=3)
    incoming = tmp_path / "incoming" / "cryo"
    small = Geometry(
        rows=32, cols=40, biassec=Section(33, 40, 1, 32), trimsec=Section(1, 32, 1, 32)
    )
    # Separate directories: two writers in the same second would pick the same names.
    where = {CRYO_LABEL: incoming, "40x32-1x1": incoming / "small"}
    where["40x32-1x1"].mkdir()
    written: dict[str, list[Path]] = {}
    with running_service(config) as service:

        def write(label: str, geometry: Geometry, seed: int) -> None:
            paths = write_frames(
                config, "cryo", 3, seed=seed, now=evening, geometry=geometry, out_dir=where[label]
            )
            written[label] = paths

        writers = [
            threading.Thread(target=write, args=(CRYO_LABEL, CRYO_GEOMETRY, 1)),
            threading.Thread(target=write, args=("40x32-1x1", small, 2)),
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        everything = written[CRYO_LABEL] + written["40x32-1x1"]
        before = fingerprints(everything)
        published = service.wait_event("master.published", count=2)
        status = service.stop()[0]
    assert status == 0
    masters = {m["geometry"]: m for m in catalog_rows(config, "SELECT * FROM masters")}
    assert sorted(masters) == sorted(where)
    assert sorted(e["path"] for e in published) == sorted(m["path"] for m in masters.values())
    assert masters_in(tmp_path / "masters") == sorted(Path(m["path"]) for m in masters.values())
    trimmed = {CRYO_LABEL: (40, 48), "40x32-1x1": (32, 32)}  # each TRIMSEC's shape
    for label, master in masters.items():
        path = Path(master["path"])
        assert path.parent == tmp_path / "masters" / "cryo" / NIGHT
        assert path.name == f"bias_cryo_{NIGHT}_{master['sequence']:02d}_{label}.fits"
        assert (master["ncombine"], fits.getheader(path)["NCOMBINE"]) == (3, 3)
        assert fits.getheader(path)["BWGEOM"] == label
        assert inputs_of(path) == names(written[label])  # no frame in the wrong master
        assert master_data(path).shape == trimmed[label]
    sets = catalog_rows(config, "SELECT geometry, state FROM sets")
    assert sorted((s["geometry"], s["state"]) for s in sets) == sorted(
        (label, "done") for label in where
    )
    frames = catalog_rows(config, "SELECT path, geometry, status FROM frames")
    assert {(r["path"], r["geometry"], r["status"]) for r in frames} == {
        (str(p), label, "combined") for label, paths in written.items() for p in paths
    }
    assert fingerprints(everything) == before
    assert tree(incoming) == {p.relative_to(incoming).as_posix() for p in everything} | {"small"}


def test_writers_that_rename_or_move_in_give_one_row_per_final_name(tmp_path: Path) -> None:
    """Temporary names renamed in place, files or directories moved in: one row per final name."""
    config = write_config(tmp_path, expected_frames=8)
    incoming = tmp_path / "incoming" / "cryo"
    outside = tmp_path / "outside"  # a sibling of the watched trees: a staging disk
    staged = write_frames(config, "cryo", 8, interval=0.0, now=evening, out_dir=outside)
    # README: hidden and temporary names (.*, *.tmp, *.part) are never frames. Only the
    # hidden final name also matches the camera's patterns (*.fits): the others are
    # kept out by the patterns as well as by the temporary-name rule.
    temporary = [
        ".{}",  # hidden under the final name, then renamed
        ".{}",
        ".{}.tmp",  # hidden and .tmp: many acquisition programs
        "{}.part",  # browsers, curl, some copy tools
        ".{}.Xq3Zk9",  # rsync: the hidden name with a random suffix
    ]
    finals: list[Path] = []
    with running_service(config) as service:
        for source, rename in zip(staged[:5], temporary, strict=True):
            work = put(incoming / rename.format(source.name), source.read_bytes())
            # The writer checks the file before renaming it: the temporary name sits
            # complete and closed for longer than settle_seconds (0.3) plus a poll (0.1).
            time.sleep(0.6)
            work.rename(incoming / source.name)
            finals.append(incoming / source.name)
        for source in staged[5:7]:  # moved in whole from outside the watched tree
            source.rename(incoming / source.name)
            finals.append(incoming / source.name)
        # A night's directory filled outside, then moved in at once (rsync --delay-updates).
        night_dir = outside / "20300114"
        night_dir.mkdir()
        staged[7].rename(night_dir / staged[7].name)
        night_dir.rename(incoming / night_dir.name)
        finals.append(incoming / night_dir.name / staged[7].name)
        before = fingerprints(finals)
        (published,) = service.wait_event("master.published")
        frame_events = [e for e in service.events() if e["event"].startswith("frame.")]
        status = service.stop()[0]
    assert status == 0
    frames = catalog_rows(config, "SELECT path, status FROM frames")
    assert sorted(r["path"] for r in frames) == sorted(str(p) for p in finals)
    assert {r["status"] for r in frames} == {"combined"}
    assert {e["file"] for e in frame_events} <= {str(p) for p in finals}
    master = Path(published["path"])
    assert masters_in(tmp_path / "masters") == [master]
    assert (fits.getheader(master)["NCOMBINE"], inputs_of(master)) == (8, names(finals))
    assert fingerprints(finals) == before
    assert tree(incoming) == {p.relative_to(incoming).as_posix() for p in finals} | {"20300114"}


# Path-like strings as a hostile or broken camera program might write them: climbing
# out of a relative directory (four levels reach tmp_path's parent from a master's
# directory, three reach tmp_path itself), absolute paths, the home directory.
CLIMB = "../../../../tmp/escape"
ABSOLUTE = "/etc/passwd"
RELATIVE = "../../../escape-rel"


def escape_targets(tmp_path: Path, values: Iterable[str]) -> list[Path]:
    """Where each value would land below a directory the service writes, outside tmp_path.

    Inside tmp_path the whole tree is compared instead; '.' or '..' there name the
    service's own directories.
    """
    bases = [
        tmp_path / "masters",
        tmp_path / "masters" / "cryo",
        tmp_path / "masters" / "cryo" / NIGHT,
        tmp_path / "state",
        tmp_path / "state" / "work" / "cryo",
        tmp_path / "state" / "work" / "cryo" / NIGHT,
        tmp_path / "incoming" / "cryo",
        tmp_path,
        Path.cwd(),
    ]
    landed = {Path(os.path.normpath(base / value)) for base in bases for value in values}
    # A directory that already exists (/tmp itself, for '../../../../tmp') changes its
    # mtime whenever anyone on the machine makes a file in it: only the names a file
    # could be written to are compared.
    return sorted(p for p in landed if not p.is_relative_to(tmp_path) and not p.is_dir())


def lstat_or_none(path: Path) -> tuple[int, int, int] | None:
    """(mode, size, mtime_ns) of whatever is at ``path``, or None."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_mode, st.st_size, st.st_mtime_ns


def test_path_like_header_strings_write_nothing_outside_masters_and_state(
    tmp_path: Path,
) -> None:
    """Path-like header values never name an output: one master under masters_dir/cryo/<night>."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile: dict[str, dict[str, object]] = {
        "hostile_1.fits": {
            "INSTRUME": CLIMB,
            "OBJECT": ABSOLUTE,
            "FILTER": RELATIVE,
            "DETECTOR": str(tmp_path / "escape-abs"),
        },
        "hostile_2.fits": {  # keywords biaswatch itself writes into a master
            "FILENAME": "../../../escape-file.fits",
            "IMCMB001": "../../../escape-imcmb.fits",
            "BWCAMERA": "../../escape-cam",
            "BWNIGHT": "../../../escape-night",
            "BWGEOM": "../escape-geom",
        },
        "hostile_3.fits": {"DATE-OBS": CLIMB},  # unparsable: the night comes from mtime
        # A name with quotes, a backslash and spaces: all legal in a Linux file name.
        'it\'s a "bias" \\..\\escape.fits': {"OBJECT": "; rm -rf / #", "ORIGIN": "$(id)"},
        "hostile_5.fits": {"INSTRUME": "..", "OBJECT": ".", "TELESCOP": "~/escape"},
    }
    # Path-like strings in the keywords that do decide a name (the geometry label, the
    # trim section) are refused, naming the keyword.
    refused: dict[str, tuple[dict[str, object], str]] = {
        "xbinning.fits": ({"XBINNING": RELATIVE}, f"XBINNING = {RELATIVE!r} is not a whole number"),
        "trimsec.fits": (
            {"TRIMSEC": CLIMB},
            f"trim = header:TRIMSEC: {CLIMB!r} is not a FITS section like '[1:2048,1:2048]'",
        ),
    }
    headers = {**hostile, **{name: header for name, (header, _) in refused.items()}}
    targets = escape_targets(tmp_path, [str(v) for h in headers.values() for v in h.values()])
    targets_before = {t: lstat_or_none(t) for t in targets}
    tree_before = tree(tmp_path)
    with running_service(config) as service:
        written: list[Path] = []
        for seed, (name, header) in enumerate(headers.items(), start=40):
            if name == "hostile_3.fits":
                # Dated by its mtime, set this evening before it is moved in.
                staged = put(outside / name, frame(seed, header=header))
                os.utime(staged, (evening().timestamp(),) * 2)
                written.append(staged.rename(incoming / name))
            else:
                written.append(put(incoming / name, frame(seed, header=header)))
        before = fingerprints(written)
        (published,) = service.wait_event("master.published")
        judged(config, len(written))
        preview = Path(published["path"]).with_suffix(".png")
        wait_until(preview.exists, 60, "the preview, drawn after publication")
        status = service.stop()[0]
    assert status == 0
    found = by_name(config)
    assert {found[name]["status"] for name in hostile} == {"combined"}
    assert {found[name]["night"] for name in hostile} == {NIGHT}
    assert found["hostile_3.fits"]["note"].startswith(f"DATE-OBS unparsable ({CLIMB!r})")
    for name, (_, reason) in refused.items():
        assert (found[name]["status"], found[name]["reason"]) == ("rejected", reason)
    masters = tmp_path / "masters"
    master = masters / "cryo" / NIGHT / f"bias_cryo_{NIGHT}_01_{CRYO_LABEL}.fits"
    assert Path(published["path"]) == master
    header = fits.getheader(master)
    assert (header["BWCAMERA"], header["BWNIGHT"], header["BWGEOM"]) == ("cryo", NIGHT, CRYO_LABEL)
    assert (header["NCOMBINE"], inputs_of(master)) == (5, sorted(hostile))
    assert tree(masters) == {
        "cryo",
        "cryo/latest.fits",
        f"cryo/latest-{CRYO_LABEL}.fits",  # the current master of its configuration
        f"cryo/{NIGHT}",
        f"cryo/{NIGHT}/{master.name}",
        f"cryo/{NIGHT}/{master.with_suffix('.png').name}",  # its preview
        "cryo/index.json",  # each configured camera's index, written at start and publish
        "te",
        "te/index.json",
    }
    state = tmp_path / "state"
    for root in (masters, state):  # links included: nothing resolves outside its tree
        assert all(p.resolve().is_relative_to(root) for p in root.rglob("*"))
    outputs = [masters, state, tmp_path / "log", tmp_path / "service-output.txt"]
    placed = {p.relative_to(tmp_path).as_posix() for p in written} | {"outside"}
    assert tree(tmp_path, skip=outputs) == tree_before | placed
    assert {t: lstat_or_none(t) for t in targets} == targets_before
    assert fingerprints(written) == before


def test_a_file_name_that_is_not_printable_ascii_does_not_stop_the_nights_master(
    tmp_path: Path,
) -> None:
    """A raw file named with non-ASCII letters still lets its set publish a master."""
    config = write_config(tmp_path, service={"combine_retry_seconds": 0.2}, expected_frames=3)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        written = [put(incoming / "bïas_é.fits", frame(50))]
        written += write_frames(config, "cryo", 2, now=evening)
        before = fingerprints(written)
        wait_until(
            lambda: bool(service.events("master.published") or service.events("set.failed")),
            60,
            "a master or a failed set",
        )
        failed = service.events("set.failed")
        status = service.stop()[0]
    assert status == 0
    assert not failed, failed[0]["reason"]
    (master,) = (tmp_path / "masters" / "cryo").rglob("bias_*.fits")
    assert "b\\xefas_\\xe9.fits" in inputs_of(master)  # escaped, never dropped
    assert fingerprints(written) == before
