"""Guards on library behaviour biaswatch works around (reliability.md 2.6).

If one of these fails after an upgrade, the library changed: the workaround may be
unneeded now, or may need changing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from biaswatch.config import load_config
from biaswatch.fitsbytes import fits_status
from biaswatch.service.loop import Service
from biaswatch.testing.fits import make_bias_fits, truncated_copy


def test_astropy_truncation_is_warning_only(tmp_path: Path) -> None:
    """astropy opens a truncated FITS file with only a warning; our own walk says truncated."""
    whole = make_bias_fits(tmp_path / "whole.fits")
    cut = truncated_copy(whole, tmp_path / "cut.fits", whole.stat().st_size - 2880)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(cut) as hdul:
            assert len(hdul) == 1  # opened, no exception
            with pytest.raises((TypeError, ValueError, OSError)):
                _ = hdul[0].data  # the failure comes later, and looks unrelated
    assert any(issubclass(w.category, AstropyUserWarning) for w in caught)
    assert fits_status(cut).state == "incomplete"


def test_apscheduler_skips_late_jobs_by_default_and_the_service_does_not(tmp_path: Path) -> None:
    """apscheduler 3 gives up on a job 1 s late by default; the service's scheduler never does."""
    defaults = BackgroundScheduler()
    assert defaults._job_defaults["misfire_grace_time"] == 1
    config = tmp_path / "config.toml"
    config.write_text('[cameras.cam]\nwatch = ["in"]\n', encoding="utf-8")
    service = Service(load_config(config))
    try:
        assert service.scheduler._job_defaults["misfire_grace_time"] is None
    finally:
        service.catalog.close()
