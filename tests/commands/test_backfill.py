"""``biaswatch backfill`` as an operator runs it, on an archive of past nights."""

from __future__ import annotations

import subprocess
from pathlib import Path

from astropy.io import fits

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.service import catalog_rows

# Two past nights (03:00 UTC is the evening before in Chicago): 2025-03-09 and -10.
NIGHTS = ("2025-03-10", "2025-03-11")


def backfill(config: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch backfill`` for camera cryo on ``archive``."""
    return run_cli(*("backfill", "--config", config, "--camera", "cryo", archive))


def test_backfill_combines_past_nights_once_and_resumes_without_duplicates(
    tmp_path: Path,
) -> None:
    """Two archived nights give two masters; a second run adds nothing and remakes nothing."""
    config = write_config(tmp_path, expected_frames=5, min_frames=3)
    archive = tmp_path / "archive"
    for day in NIGHTS:
        night_dir = archive / day
        night_dir.mkdir(parents=True)
        for i in range(3):  # fewer than expected_frames: closed because the night is over
            write_cryo_raw(
                night_dir / f"b{i}.fits", int(day[-2:]) * 10 + i, date_obs=f"{day}T03:00:0{i}"
            )
    (archive / "junk.fits").write_bytes(b"not a FITS file" * 200)
    first = backfill(config, archive)
    assert first.returncode == 0, first.stderr
    assert "7 new file(s) recorded, 2 set(s) combined; 2 master(s)" in first.stdout
    assert "frames: 100%" in first.stderr and "masters: 100%" in first.stderr  # tqdm bars
    masters = catalog_rows(config, "SELECT * FROM masters ORDER BY night")
    assert [m["night"] for m in masters] == ["2025-03-09", "2025-03-10"]
    assert all(fits.getheader(m["path"])["NCOMBINE"] == 3 for m in masters)
    (junk,) = catalog_rows(config, "SELECT * FROM frames WHERE path LIKE '%junk.fits'")
    assert junk["status"] == "rejected" and junk["reason"].startswith("not a FITS file")
    stamps = {m["path"]: Path(m["path"]).stat().st_mtime_ns for m in masters}
    again = backfill(config, archive)
    assert again.returncode == 0, again.stderr
    assert "0 new file(s) recorded, 0 set(s) combined; 2 master(s)" in again.stdout
    assert {p: Path(p).stat().st_mtime_ns for p in stamps} == stamps
    assert len(list((tmp_path / "masters").rglob("bias_*.fits"))) == 2
