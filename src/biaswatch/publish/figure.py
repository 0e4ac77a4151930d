"""A PNG next to each master: one calibrated input beside the master, and their histograms.

As the astropy CCD guide shows a combine (the seed chapter's figure): "Single
calibrated bias" beside "N bias images combined", both grey-scaled with zscale
(astropy.visualization, IRAF's display algorithm), so structure in the bias
is visible at a glance; below, both histograms on a log scale.

Drawn after publication by ``previews.Previews``, one at a time, each in a fresh
process of its own: matplotlib makes ~80 MiB of a process its own, which a
combine child must not spend out of its memory budget (benchmarks/burst.py
measured it there), and a drawing must never delay a master. Written through a
temporary name, so a reader never sees half a PNG; a failure costs the
preview, never the master. About 100 MiB more, for a second or two, at most
one at a time.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits
from astropy.visualization import ZScaleInterval
from matplotlib.axes import Axes

# 1,200 x 900 pixels at 100 dpi: readable on a laptop, ~200 kB as PNG.
FIGURE_INCHES = (12.0, 9.0)


def preview_path(master: Path) -> Path:
    """Where a master's preview goes: the same name, ``.png``."""
    return master.with_suffix(".png")


def write_preview(master: np.ndarray, single: np.ndarray, ncombine: int, final: Path) -> Path:
    """Draw the preview of the master whose final name is ``final``; returns the PNG's path."""
    out = preview_path(final)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fig, ((left, right), (hist_left, hist_right)) = plt.subplots(
        2, 2, figsize=FIGURE_INCHES, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        for ax, hist, image, title in (
            (left, hist_left, single, "Single calibrated bias"),
            (right, hist_right, master, f"{ncombine} bias images combined"),
        ):
            _panel(ax, hist, np.asarray(image, dtype=np.float32), title)
        fig.suptitle(final.name)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
    except BaseException:
        # A full disk stops savefig half-way: leave no partial PNG beside the master
        # (the soak's full-disk episode found one; the service removes temporaries only
        # at its next start).
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    os.replace(tmp, out)
    return out


def _panel(ax: Axes, hist: Axes, image: np.ndarray, title: str) -> None:
    finite = image[np.isfinite(image)]
    low, high = ZScaleInterval().get_limits(finite) if finite.size else (0.0, 1.0)
    shown = ax.imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower")
    ax.set_title(title)
    plt.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="ADU")
    hist.hist(finite.ravel(), bins=200, log=True, color="0.3")
    hist.axvspan(low, high, color="tab:blue", alpha=0.15, label="zscale range")
    hist.set_xlabel("ADU")
    hist.legend(loc="upper right", fontsize="small")


def draw_from_files(master: Path, single: Path, ncombine: int) -> None:
    """A preview process's work: read the master and one calibrated input, draw."""
    write_preview(fits.getdata(master), fits.getdata(single), ncombine, master)
