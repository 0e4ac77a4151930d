"""Files that lie, through the real service: names of any bytes, 255-byte names, FIFOs,
symlinks out of the watched tree, sparse and tile-compressed files announcing gigabytes.

Each is judged once, with a reason where it is refused, and never stops the camera:
the other frames are combined, and restarts reach READY=1 without judging anything again.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from astropy.io import fits
from test_hostile import fingerprints, frame, inputs_of, masters_in, put

from biaswatch.fitsbytes import BLOCK
from biaswatch.testing.helpers import wait_until, write_config
from biaswatch.testing.service import ServiceProcess, catalog_rows, running_service

MIB = 2**20


def frames(config: Path) -> list[dict[str, Any]]:
    """The frames table, with each path as the str the service holds (BLOB names decoded)."""
    rows = catalog_rows(config, "SELECT * FROM frames ORDER BY id")
    decoded = [dict(r) for r in rows]
    for row in decoded:
        if isinstance(row["path"], bytes):
            row["path"] = os.fsdecode(row["path"])
    return decoded


def peak_rss(pid: int) -> int:
    """Process ``pid``'s peak resident set (VmHWM, proc(5)), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM line for process {pid}")


def restart_three_times(config: Path) -> list[list[dict[str, Any]]]:
    """Start the service 3 times, each to READY=1 and a finished start scan; their events."""
    runs = []
    for _ in range(3):
        config.parent.joinpath("log", "biaswatch.jsonl").unlink(missing_ok=True)
        service = ServiceProcess(config)
        try:
            service.wait_ready()
            service.wait_event("watch.scanned", count=2)  # both cameras listed
            runs.append(service.events())
            assert service.stop()[0] == 0
        finally:
            service.close()
    return runs


def test_names_that_are_not_utf8_are_ingested_combined_and_never_twice(tmp_path: Path) -> None:
    """Ten frames, three named with bytes that are not UTF-8, written while down: all combine."""
    config = write_config(tmp_path, expected_frames=10)
    incoming = tmp_path / "incoming" / "cryo"
    odd = [os.fsdecode(b"bias_\xff\xfe_%d.fits" % i) for i in range(3)]
    plain = [f"bias_{i:02d}.fits" for i in range(7)]
    written = [put(incoming / name, frame(60 + i)) for i, name in enumerate(odd + plain)]
    before = fingerprints(written)
    with running_service(config) as service:
        (published,) = service.wait_event("master.published")
        errors = [e for e in service.events() if e["level"] in ("error", "critical")]
        assert service.stop()[0] == 0
    assert not errors, errors
    rows = frames(config)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in written)
    assert {r["status"] for r in rows} == {"combined"}
    (master,) = masters_in(tmp_path / "masters")
    assert str(master) == published["path"]
    assert "bias_\\xff\\xfe_0.fits" in inputs_of(master)  # shown escaped, never dropped
    calibrated = [e for e in service.events("frame.calibrated") if "\\xff\\xfe" in e["file"]]
    assert len(calibrated) == 3  # the JSON log shows the name escaped, not as U+FFFD
    for run in restart_three_times(config):
        assert not [e for e in run if e["level"] in ("error", "critical")]
        assert not [e for e in run if e["event"].startswith("frame.")]
    assert len(frames(config)) == 10
    assert masters_in(tmp_path / "masters") == [master]
    assert fingerprints(written) == before


def test_a_255_byte_file_name_is_calibrated_and_combined(tmp_path: Path) -> None:
    """A raw file with the longest legal name (255 bytes) joins its set's master."""
    config = write_config(tmp_path, expected_frames=3)
    incoming = tmp_path / "incoming" / "cryo"
    longest = "b" * (255 - len(".fits")) + ".fits"
    with running_service(config) as service:
        written = [put(incoming / longest, frame(70))]
        written += [put(incoming / f"bias_{i}.fits", frame(71 + i)) for i in range(2)]
        service.wait_event("master.published")
        rejected = service.events("frame.rejected")
        assert service.stop()[0] == 0
    assert not rejected, rejected
    (master,) = masters_in(tmp_path / "masters")
    assert longest in inputs_of(master)
    assert {r["status"] for r in frames(config)} == {"combined"}


def test_a_fifo_named_like_a_frame_is_rejected_once_and_blocks_nothing(tmp_path: Path) -> None:
    """A FIFO named x.fits gets one recorded reason; the camera's frames combine promptly."""
    config = write_config(tmp_path, service={"rescan_minutes": 0.02}, expected_frames=3)
    incoming = tmp_path / "incoming" / "cryo"
    fifo = incoming / "x.fits"
    os.mkfifo(fifo)
    with running_service(config) as service:
        written = [put(incoming / f"bias_{i}.fits", frame(80 + i)) for i in range(3)]
        # Settle 0.3 s per frame: calibrated in seconds, well before the 60 s after
        # which a lane stuck in open() is reported stalled.
        service.wait_event("frame.calibrated", count=3, timeout=20)
        service.wait_event("master.published", timeout=90)  # the first combine compiles
        service.wait_event("watch.scanned", count=6)  # rescans every 1.2 s list the FIFO
        events = service.events()
        assert service.stop()[0] == 0
    assert not [e for e in events if e["event"] == "camera.stalled"]
    about_fifo = [e for e in events if e.get("file") == str(fifo)]
    assert [e["event"] for e in about_fifo] == ["frame.rejected"]
    assert "FIFO" in about_fifo[0]["reason"]
    rows = {r["path"]: r for r in frames(config)}
    assert rows[str(fifo)]["status"] == "rejected"
    assert {rows[str(p)]["status"] for p in written} == {"combined"}


def test_a_symlink_out_of_the_watched_tree_is_refused_and_one_within_is_read(
    tmp_path: Path,
) -> None:
    """A link leaving cryo's tree is rejected with a reason; its pixels and cards stay out."""
    config = write_config(tmp_path, expected_frames=3)
    outside = tmp_path / "outside"
    outside.mkdir()
    stranger = put(outside / "stranger.fits", frame(90, header={"OBSERVER": "not ours"}))
    cryo = tmp_path / "incoming" / "cryo"
    (cryo / "inner").mkdir()
    inner = put(cryo / "inner" / "bias_inner.fits", frame(91))
    with running_service(config) as service:
        (cryo / "escape.fits").symlink_to(stranger)
        (cryo / "link_in.fits").symlink_to(inner)  # within the tree: read (a duplicate)
        written = [put(cryo / f"bias_{i}.fits", frame(92 + i)) for i in range(2)]
        service.wait_event("master.published")
        wait_until(lambda: len(judged(config)) == 5, 30, "five frames judged")
        assert service.stop()[0] == 0
    rows = {Path(r["path"]).name: r for r in frames(config)}
    assert rows["escape.fits"]["status"] == "rejected"
    assert "outside the camera's watch directories" in rows["escape.fits"]["reason"]
    assert "follow_symlinks" in rows["escape.fits"]["reason"]
    assert rows["link_in.fits"]["status"] in ("ignored", "combined")
    (master,) = masters_in(tmp_path / "masters" / "cryo")
    assert "stranger.fits" not in inputs_of(master)
    assert "OBSERVER" not in fits.getheader(master)
    assert {rows[p.name]["status"] for p in written} == {"combined"}


def test_a_camera_with_follow_symlinks_reads_a_link_out_of_its_tree(tmp_path: Path) -> None:
    """With follow_symlinks = true, a link to a frame elsewhere is read like any frame."""
    config = write_config(tmp_path, expected_frames=3)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[cameras.cryo]\n", "[cameras.cryo]\nfollow_symlinks = true\n"),
        encoding="utf-8",
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    stranger = put(outside / "stranger.fits", frame(95))
    cryo = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        (cryo / "allowed.fits").symlink_to(stranger)
        for i in range(2):
            put(cryo / f"bias_{i}.fits", frame(96 + i))
        service.wait_event("master.published")
        assert service.stop()[0] == 0
    (master,) = masters_in(tmp_path / "masters" / "cryo")
    assert "allowed.fits" in inputs_of(master)


def judged(config: Path) -> list[dict[str, Any]]:
    """The frames with a verdict (anything but 'seen')."""
    return [r for r in frames(config) if r["status"] != "seen"]


def sparse_fits(path: Path, rows: int, cols: int) -> Path:
    """A FITS file whose header announces rows x cols float64 and whose data is a hole."""
    header = (
        "SIMPLE  =                    T".ljust(80)
        + "BITPIX  =                  -64".ljust(80)
        + "NAXIS   =                    2".ljust(80)
        + f"NAXIS1  = {cols:>20}".ljust(80)
        + f"NAXIS2  = {rows:>20}".ljust(80)
        + "IMAGETYP= 'BIAS    '".ljust(80)
        + "END".ljust(80)
    ).ljust(BLOCK)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.truncate(BLOCK + rows * cols * 8)  # the data: a hole, no block on disk
    return path


def with_value(content: bytes, keyword: str, value: int) -> bytes:
    """``content`` with the first ``keyword`` card's value replaced (fixed format)."""
    start = content.index(f"{keyword:<8}= ".encode())
    card = f"{keyword:<8}= {value:>20}".encode()
    return content[:start] + card + content[start + len(card) :]


def test_files_announcing_more_than_the_budget_are_refused_before_reading(
    tmp_path: Path,
) -> None:
    """Sparse and tile-compressed files announcing 3.2 GB are rejected once; RSS stays low."""
    config = write_config(
        tmp_path, service={"rescan_minutes": 0.02}, expected_frames=3, max_incomplete_minutes=0.05
    )
    cryo = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        baseline = peak_rss(service.proc.pid)
        sparse_fits(cryo / "huge_sparse.fits", 20000, 20000)  # 3.2 GB announced, 4 KB stored
        sparse_fits(cryo / "hole.fits", 2000, 2000)  # 32 MB: within budget, never written
        # A real .fits.fz of a small frame, whose ZNAXISn then announce 20000 x 20000.
        packed = put(cryo / "huge.fits.fz", _compressed(frame(100)))
        written = [put(cryo / f"bias_{i}.fits", frame(101 + i)) for i in range(3)]
        service.wait_event("master.published")
        wait_until(lambda: len(service.events("frame.rejected")) >= 3, 60, "three rejections")
        service.wait_event("watch.scanned", count=8)  # rescans list them all again
        grown = peak_rss(service.proc.pid) - baseline
        events = service.events()
        assert service.stop()[0] == 0
    assert grown < 200 * MIB, f"peak RSS grew by {grown / MIB:.0f} MiB"
    reasons = {Path(e["file"]).name: e["reason"] for e in events if e["event"] == "frame.rejected"}
    assert len([e for e in events if e["event"] == "frame.rejected"]) == 3
    assert "3200000000 bytes" in reasons["huge_sparse.fits"]
    assert "max_frame_bytes" in reasons["huge_sparse.fits"]
    assert "max_frame_bytes" in reasons[packed.name]
    assert "sparse file" in reasons["hole.fits"]
    rows = {Path(r["path"]).name: r for r in frames(config)}
    assert {rows[p.name]["status"] for p in written} == {"combined"}
    for run in restart_three_times(config):
        assert not [e for e in run if e["event"].startswith("frame.")]


def _compressed(content: bytes) -> bytes:
    """``content`` (a primary-HDU frame) as a tile-compressed file announcing 20000 x 20000."""
    with fits.open(io.BytesIO(content)) as hdul:
        out = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(hdul[0].data, hdul[0].header)]).writeto(
            out
        )
    packed = out.getvalue()
    return with_value(with_value(packed, "ZNAXIS1", 20000), "ZNAXIS2", 20000)
