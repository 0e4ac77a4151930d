"""File names of any bytes and files that lie, without the service: the catalog keeps
names losslessly, people and terminals see them escaped, and a frame is opened only when
it is a regular file within the camera's reach and budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biaswatch.catalog.rows import FrameRecord
from biaswatch.catalog.store import Catalog
from biaswatch.config import CameraConfig
from biaswatch.errors import FrameRejected
from biaswatch.fitsbytes import END_SEARCH_CARDS, file_status
from biaswatch.frames.readiness import read_frame
from biaswatch.names import bound, for_terminal, shown
from biaswatch.testing.fits import fits_bytes
from biaswatch.testing.helpers import cryo_camera
from biaswatch.watch.scan import probe_directory

ODD = os.fsdecode(b"bias_\xff\xfe.fits")  # not UTF-8: lone surrogates in a str
EVIL = "evil\x1b[2J\x1b]0;owned\x07" + os.fsdecode(b"\xff") + ".fits"


def test_a_name_that_is_not_utf8_round_trips_through_the_catalog(tmp_path: Path) -> None:
    """A non-UTF-8 path is stored as its bytes and read back as the same str; UTF-8 as TEXT."""
    catalog = Catalog(tmp_path / "catalog.sqlite")
    odd, plain = tmp_path / ODD, tmp_path / "bïas.fits"
    try:
        for path in (odd, plain):
            catalog.record_frame(FrameRecord(str(path), "cryo", 10, 20, "rejected", reason="x"))
        assert catalog.is_known(odd, 10, 20)
        row = catalog.frame(odd)
        assert row is not None and row["path"] == str(odd)
        assert sorted(p for p, _ in catalog.rejected_since("cryo", "")) == sorted(
            [str(odd), str(plain)]
        )
        kinds = catalog._db.execute("SELECT typeof(path) FROM frames ORDER BY id").fetchall()
    finally:
        catalog.close()
    assert [k[0] for k in kinds] == ["blob", "text"]
    assert bound(odd) == os.fsencode(odd) and bound(plain) == str(plain)


def test_for_terminal_escapes_control_characters_and_undecodable_bytes() -> None:
    """ESC, BEL, C1 controls and bytes that are not UTF-8 come out as visible escapes."""
    assert for_terminal(EVIL) == "evil\\x1b[2J\\x1b]0;owned\\x07\\xff.fits"
    assert for_terminal("caf\u00e9 \x9b1m tab\there") == "caf\u00e9 \\x9b1m tab\\x09here"
    assert shown(ODD) == "bias_\\xff\\xfe.fits"


def test_a_watch_path_that_is_a_file_is_reported_as_not_a_directory(tmp_path: Path) -> None:
    """probe_directory tells a file standing where the directory should be from a missing one."""
    (tmp_path / "file").write_bytes(b"")
    assert probe_directory(tmp_path / "file") == "not a directory"
    assert probe_directory(tmp_path / "nothing") == "missing"
    assert probe_directory(tmp_path) == "ok"


@pytest.fixture(name="camera")
def _camera_in(tmp_path: Path) -> CameraConfig:
    (tmp_path / "in").mkdir()
    return cryo_camera(tmp_path / "in")


def test_directories_and_outside_symlinks_are_refused_inside_links_read(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """A directory named *.fits and a link leaving the tree are refused; a link within is read."""
    (tmp_path / "in" / "dir.fits").mkdir()
    with pytest.raises(FrameRejected, match="a directory, not a regular file"):
        read_frame(tmp_path / "in" / "dir.fits", camera)
    content = fits_bytes()
    (tmp_path / "outside.fits").write_bytes(content)
    (tmp_path / "in" / "real.fits").write_bytes(content)
    (tmp_path / "in" / "out.fits").symlink_to(tmp_path / "outside.fits")
    (tmp_path / "in" / "in.fits").symlink_to(tmp_path / "in" / "real.fits")
    with pytest.raises(FrameRejected, match="outside the camera's watch directories"):
        read_frame(tmp_path / "in" / "out.fits", camera)
    assert read_frame(tmp_path / "in" / "in.fits", camera).image.shape == (40, 48)
    allowed = camera.model_copy(update={"follow_symlinks": True})
    assert read_frame(tmp_path / "in" / "out.fits", allowed).image.shape == (40, 48)


def test_announced_sizes_over_the_budget_or_absent_from_disk_are_refused(
    tmp_path: Path, camera: CameraConfig
) -> None:
    """Headers announcing more than max_frame_bytes, or data that is a hole, are not read."""
    camera = camera.model_copy(update={"max_frame_bytes": 10**6})
    compressed = fits_bytes(layout="compressed")
    packed = tmp_path / "in" / "small.fits.fz"
    packed.write_bytes(compressed)
    assert read_frame(packed, camera).image.shape == (40, 48)  # 3840 bytes: within 1 MB
    start = compressed.index(b"ZNAXIS1 = ")
    assert compressed[start : start + 30] == f"{'ZNAXIS1':<8}= {48:>20}".encode()
    lying = compressed[:start] + f"{'ZNAXIS1':<8}= {20000:>20}".encode() + compressed[start + 30 :]
    packed.write_bytes(lying)
    with pytest.raises(FrameRejected, match=r"announce 1600000 bytes .*max_frame_bytes = 1000000"):
        read_frame(packed, camera)
    hole = tmp_path / "in" / "hole.fits"
    header = fits_bytes(shape=(300, 300), dtype="float32")[:2880]
    with open(hole, "wb") as f:
        f.write(header)
        f.truncate(2880 + 300 * 300 * 4)
    with pytest.raises(FrameRejected, match="sparse file"):
        read_frame(hole, camera)


def test_a_header_without_end_is_not_read_past_the_card_bound(tmp_path: Path) -> None:
    """A SIMPLE card followed by a 3.2 GB hole is judged not FITS after END_SEARCH_CARDS."""
    path = tmp_path / "endless.fits"
    with open(path, "wb") as f:
        f.write(b"SIMPLE  =                    T".ljust(2880))
        f.truncate(3_200_000_000)
    with open(path, "rb") as f:
        status = file_status(f)
        read = f.tell()
    assert status.state == "not_fits" and "1000000 cards" in status.detail
    assert read <= END_SEARCH_CARDS * 80 + 2 * 2880  # whole blocks: at most one past the bound
