"""Publishing: header provenance, atomic never-overwrite writes, the latest link."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from biaswatch.combine.master_file import (
    MasterInfo,
    is_temporary,
    master_header,
    master_path,
    write_temporary,
)
from biaswatch.publish.master import give_final_name, point_latest
from biaswatch.settings import CombineSettings

INFO = MasterInfo(
    camera="cryo",
    night="2026-11-24",
    sequence=2,
    geometry="48x40-1x1",
    raw_names=("a.fits", "b.fits", "c.fits"),
    settings=CombineSettings(),
    mem_limit=350_000_000,
    input_digest="ab" * 32,
)


def test_master_path_layout(tmp_path: Path) -> None:
    """Masters live in masters_dir/<camera>/<night>/ with sequence and geometry in the name."""
    assert (
        master_path(tmp_path, INFO)
        == tmp_path / "cryo/2026-11-24/bias_cryo_2026-11-24_02_48x40-1x1.fits"
    )


def test_header_records_the_combine() -> None:
    """The header carries COMBINED, NCOMBINE, IMCMBnnn, parameters, camera, night and version."""
    header = master_header(fits.Header({"INSTRUME": "cryo", "FRAMENO": 7}), INFO)
    assert header["COMBINED"] is True
    assert header["NCOMBINE"] == 3
    assert [header[f"IMCMB00{i}"] for i in (1, 2, 3)] == ["a.fits", "b.fits", "c.fits"]
    assert (header["BWMETHOD"], header["BWSLOW"], header["BWSHIGH"]) == ("average", 5.0, 5.0)
    assert (header["BWCENTER"], header["BWDEV"], header["BWITERS"]) == ("median", "mad_std", 1)
    assert (header["BWCAMERA"], header["BWNIGHT"], header["BWSEQ"]) == ("cryo", "2026-11-24", 2)
    assert header["BWDIGEST"] == "ab" * 32
    assert "BWVERS" in header
    assert "DATE" in header
    assert header["INSTRUME"] == "cryo"
    assert "FRAMENO" not in header


def test_written_master_verifies(tmp_path: Path) -> None:
    """The written master is float32 with valid CHECKSUM and DATASUM."""
    final = master_path(tmp_path, INFO)
    tmp = write_temporary(np.ones((4, 5)), master_header(fits.Header(), INFO), final)
    assert is_temporary(tmp)
    give_final_name(tmp, final)
    assert not tmp.exists()
    with fits.open(final, checksum=True) as hdul:
        assert hdul[0].data.dtype == np.dtype(">f4")
        assert hdul[0].header["CHECKSUM"]
        assert hdul[0].header["DATASUM"]


def test_never_overwrites_an_existing_master(tmp_path: Path) -> None:
    """Giving a final name that exists fails and leaves the existing master untouched."""
    final = master_path(tmp_path, INFO)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"the old master")
    tmp = write_temporary(np.ones((4, 5)), fits.Header(), final)
    with pytest.raises(FileExistsError):
        give_final_name(tmp, final)
    assert final.read_bytes() == b"the old master"


def test_latest_link_moves_atomically(tmp_path: Path) -> None:
    """latest.fits is a relative symlink that is replaced, never missing."""
    first, second = tmp_path / "n1/a.fits", tmp_path / "n2/b.fits"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(path.name)
    link = tmp_path / "latest.fits"
    point_latest(link, first)
    point_latest(link, second)
    assert link.is_symlink()
    assert str(link.readlink()) == "n2/b.fits"
    assert link.read_text() == "b.fits"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.fits", "n1", "n2"]
