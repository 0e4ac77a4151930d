"""The recipe's full master: per-segment combine, MASK and UNCERT equal to ccdproc.combine's."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData

from biaswatch.combine.child import CombineJob, CombineResult, make_master
from biaswatch.combine.dask_tasks import Split, _bands
from biaswatch.combine.engine import OUTPUT_BYTES, band_rows, combine_planes
from biaswatch.combine.master_file import MasterInfo
from biaswatch.combine.planes import concatenate_bands
from biaswatch.errors import CombineFailed
from biaswatch.settings import CombineSettings
from biaswatch.testing.fits import bias_stack, seed_combined, write_segment_stack, write_stack

SEED = CombineSettings()
# Clipping at half a standard deviation about the mean empties some pixels outright
# (two clusters of values, none within 0.5 sigma of their mean): a MASK with pixels.
TIGHT = CombineSettings(sigma_low=0.5, sigma_high=0.5, center="mean", deviation="std")
VARIANTS = {
    "seed": SEED,
    "median": CombineSettings(method="median"),
    "tight": TIGHT,
    "tight-median": TIGHT.model_copy(update={"method": "median"}),
}
NAMES = ("AMP1", "AMP2", "AMP3", "AMP4")


def stack_with_holes(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """bias_stack with one pixel NaN in every frame and one split into two clusters."""
    stack = bias_stack(n, shape, seed=seed)
    stack[:, 2, 3] = np.nan  # every value invalid: masked in any variant
    stack[:, 4, 5] = np.where(np.arange(n) % 2 == 0, 990.0, 1010.0)  # emptied by TIGHT
    return stack


def job_for(tmp_path: Path, inputs: list[Path], settings: CombineSettings) -> CombineJob:
    """A combine job over calibrated work files with the given statistics."""
    info = MasterInfo(
        "cam",
        "2026-11-24",
        1,
        "geometry",
        tuple(p.name for p in inputs),
        settings,
        350_000_000,
        "0" * 64,
    )
    return CombineJob(3, tuple(str(p) for p in inputs), str(tmp_path / "out" / "m.fits"), info)


def master_of(tmp_path: Path, inputs: list[Path], settings: CombineSettings) -> CombineResult:
    """make_master's answer, asserted to have written a temporary."""
    result = make_master(job_for(tmp_path, inputs, settings))
    assert result.temporary is not None, result.reason
    return result


def assert_same_ccd(ours: CCDData, ref: CCDData) -> None:
    """Data within 1e-3 ADU, mask equal, uncertainty within 1e-4 relative (NaN where NaN)."""
    np.testing.assert_allclose(ours.data, ref.data, rtol=0, atol=1e-3)
    assert ours.mask is not None and ref.mask is not None
    np.testing.assert_array_equal(ours.mask, ref.mask)
    assert ours.uncertainty is not None and type(ours.uncertainty).__name__ == "StdDevUncertainty"
    np.testing.assert_allclose(ours.uncertainty.array, ref.uncertainty.array, rtol=1e-4, atol=0)


def reference(images: list[Path], settings: CombineSettings, hdu: str | None = None) -> CCDData:
    """ccdproc.combine of the inputs with the seed's call, its warnings on empty pixels hushed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return seed_combined([str(p) for p in images], settings=settings, hdu=hdu)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_image_master_reads_back_as_ccdproc_combine(tmp_path: Path, variant: str) -> None:
    """CCDData.read of a one-image master gives ccdproc.combine's data, mask and uncertainty."""
    settings = VARIANTS[variant]
    inputs = write_stack(tmp_path, stack_with_holes(7, (24, 30), seed=3))
    result = master_of(tmp_path, inputs, settings)
    ref = reference(inputs, settings)
    assert ref.mask.any()  # the comparison covers masked pixels
    assert_same_ccd(CCDData.read(result.temporary), ref)
    with fits.open(result.temporary) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "MASK", "UNCERT"]
    assert result.segments == ()


@pytest.mark.parametrize("variant", ["seed", "tight-median"])
def test_mef_master_segments_read_back_as_ccdproc_per_extension(
    tmp_path: Path, variant: str
) -> None:
    """Each segment of a 4-extension master reads back as ccdproc.combine of that extension."""
    settings = VARIANTS[variant]
    stacks = {
        name: stack_with_holes(6, (20, 16), seed=10 + i) + 40.0 * i for i, name in enumerate(NAMES)
    }
    inputs = write_segment_stack(tmp_path, stacks, {"INSTRUME": "quad"})
    result = master_of(tmp_path, inputs, settings)
    with fits.open(result.temporary) as hdul:
        assert [h.name for h in hdul] == [
            "PRIMARY",
            *NAMES,
            *(f"{n}_{plane}" for n in NAMES for plane in ("MASK", "UNCERT")),
        ]
        assert hdul[0].data is None and hdul[0].header["INSTRUME"] == "quad"
    for name in NAMES:
        ours = CCDData.read(
            result.temporary, hdu=name, hdu_mask=f"{name}_MASK", hdu_uncertainty=f"{name}_UNCERT"
        )
        assert_same_ccd(ours, reference(inputs, settings, hdu=name))


def test_mef_master_has_qc_per_segment_and_the_aggregate(tmp_path: Path) -> None:
    """Each segment HDU holds its own QC cards; the primary and quality hold the aggregate."""
    stacks = {name: bias_stack(6, (20, 16), seed=i) + 100.0 * i for i, name in enumerate(NAMES)}
    result = master_of(tmp_path, write_segment_stack(tmp_path, stacks), SEED)
    assert [name for name, _ in result.segments] == list(NAMES)
    levels = [qc.level for _, qc in result.segments]
    assert levels == pytest.approx([1000.0, 1100.0, 1200.0, 1300.0], abs=3.0)
    assert result.quality is not None
    assert result.quality.level == pytest.approx(float(np.median(levels)), abs=1e-3)
    assert result.quality.noise == max(qc.noise for _, qc in result.segments)
    with fits.open(result.temporary) as hdul:
        assert hdul[0].header["QC_LEVEL"] == result.quality.level
        for name, qc in result.segments:
            assert hdul[name].header["QC_LEVEL"] == qc.level
            assert hdul[name].header["BUNIT"] == "adu"


def test_amplifier_regions_get_their_own_qc_cards(tmp_path: Path) -> None:
    """An image whose header names two amplifier regions gets QCA cards and one entry each."""
    stack = bias_stack(6, (20, 32), seed=4)
    stack[:, :, 16:] += 22.0  # amplifier B sits 22 ADU above A (the twoamp camera)
    amps = {"BWNAMP": 2, "BWAN1": "A", "BWAS1": "[1:16,1:20]", "BWAN2": "B"}
    inputs = write_stack(tmp_path, stack, {**amps, "BWAS2": "[17:32,1:20]"})
    result = master_of(tmp_path, inputs, SEED)
    assert [name for name, _ in result.segments] == ["A", "B"]
    (_, a), (_, b) = result.segments
    assert b.level - a.level == pytest.approx(22.0, abs=1.0)
    header = fits.getheader(result.temporary)
    assert (header["QCA1NAM"], header["QCA2NAM"]) == ("A", "B")
    assert (header["QCA1LEV"], header["QCA2LEV"]) == (a.level, b.level)
    assert result.quality is not None and header["QC_LEVEL"] == result.quality.level


@pytest.mark.parametrize("layout", ["one", "mef"])
def test_uncertainty_off_writes_the_images_only(tmp_path: Path, layout: str) -> None:
    """With uncertainty = false the master has no MASK or UNCERT, and the same images."""
    off = SEED.model_copy(update={"uncertainty": False})
    if layout == "one":
        inputs = write_stack(tmp_path, stack_with_holes(5, (12, 10), seed=1))
    else:
        stacks = {n: stack_with_holes(5, (12, 10), seed=i) for i, n in enumerate(NAMES[:2])}
        inputs = write_segment_stack(tmp_path, stacks)
    result = master_of(tmp_path, inputs, off)
    with fits.open(result.temporary) as hdul:
        names = [h.name for h in hdul]
        assert not [n for n in names if n.endswith(("MASK", "UNCERT"))]
    hdu = None if layout == "one" else "AMP1"
    ours = CCDData.read(result.temporary, **({} if hdu is None else {"hdu": hdu}))
    assert ours.mask is None and ours.uncertainty is None
    np.testing.assert_allclose(ours.data, reference(inputs, SEED, hdu).data, atol=1e-3)


@pytest.mark.parametrize("problem", ["missing", "shape", "renamed"])
def test_a_segment_that_differs_fails_the_set_naming_the_file(tmp_path: Path, problem: str) -> None:
    """A segment missing, shaped differently or renamed in one input is the set's failure."""
    stacks = {n: bias_stack(4, (10, 12), seed=i) for i, n in enumerate(NAMES[:2])}
    inputs = write_segment_stack(tmp_path, stacks)
    odd_dir = tmp_path / "odd"
    odd_dir.mkdir()
    odd_stacks = {
        "missing": {"AMP1": stacks["AMP1"][:1]},
        "shape": {"AMP1": stacks["AMP1"][:1], "AMP2": bias_stack(1, (10, 11))},
        "renamed": {"AMP1": stacks["AMP1"][:1], "AMPX": stacks["AMP2"][:1]},
    }[problem]
    odd = write_segment_stack(odd_dir, odd_stacks)[0]
    result = make_master(job_for(tmp_path, [*inputs, odd], SEED))
    assert result.temporary is None
    assert result.reason is not None and "segments differ" in result.reason
    assert str(odd) in result.reason


def test_bands_concatenated_give_the_whole_planes(tmp_path: Path) -> None:
    """Row bands combined apart (the Dask split) concatenate to the whole mask and uncertainty."""
    paths = write_stack(tmp_path, stack_with_holes(6, (13, 9), seed=2))
    whole = combine_planes(paths, TIGHT, 10**9)
    parts = [combine_planes(paths, TIGHT, 10**9, rows=r) for r in ((0, 5), (5, 6), (6, 13))]
    joined = concatenate_bands(parts)
    assert whole.mask is not None and joined.mask is not None and whole.mask.any()
    np.testing.assert_array_equal(joined.data, whole.data)
    np.testing.assert_array_equal(joined.mask, whole.mask)
    np.testing.assert_array_equal(joined.uncertainty, whole.uncertainty)


def test_the_memory_model_counts_mask_uncert_and_held_segments() -> None:
    """One row needs 5 more bytes per pixel with MASK and UNCERT, plus the held results."""
    shape, n = (100, 2000), 10
    plain = band_rows(n, shape, 10**12, "average", out_bytes=4)
    assert plain == 100

    def minimum(**kw: int) -> int:
        low, high = 1, 10**9
        while low < high:  # the smallest mem_limit band_rows accepts
            mid = (low + high) // 2
            try:
                band_rows(n, shape, mid, "average", **kw)
                high = mid
            except CombineFailed:
                low = mid + 1
        return low

    base = minimum(out_bytes=4)
    assert minimum(out_bytes=OUTPUT_BYTES) - base == 100 * 2000 * 5
    assert minimum(out_bytes=4, held=12345) - base == 12345


def test_dask_splits_one_image_into_bands_but_runs_an_mef_set_as_one_task(tmp_path: Path) -> None:
    """A one-image stack over budget is split in row bands; an MEF set is one whole task."""
    (tmp_path / "one").mkdir()
    (tmp_path / "mef").mkdir()
    shape = (1000, 300)  # 10 frames: a 12 MB stack per segment
    one = write_stack(tmp_path / "one", bias_stack(10, shape, seed=1))
    mef = write_segment_stack(
        tmp_path / "mef", {n: bias_stack(10, shape, seed=i) for i, n in enumerate(NAMES)}
    )

    def budget(job: CombineJob) -> CombineJob:
        """The job with an 8 MB budget: 4 MB reserve, about 265 rows of 9 + 10 x 4 bytes."""
        return dataclasses.replace(job, info=dataclasses.replace(job.info, mem_limit=8_000_000))

    split = _bands(budget(job_for(tmp_path, one, SEED)))
    assert len(split.bands) > 1
    assert split.bands[0][0] == 0 and split.bands[-1][1] == shape[0]
    assert _bands(budget(job_for(tmp_path, mef, SEED))) == Split(((0, 0),))
