"""What a combine produces, per segment: plain data, importable without the engine.

The service imports the combine child's module (child.py) without ever combining,
so these types live apart from the engine, which loads the compiled kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SegmentHDU:
    """One image HDU of a work file: its name ("" for a lone image), index and shape."""

    name: str
    hdu: int
    shape: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Combined:
    """A combine's result: the float32 image, and ccdproc's mask and uncertainty planes.

    ``mask`` (uint8, 1 where every value was rejected) and ``uncertainty`` (float32,
    StdDevUncertainty) are None when they were not asked for.
    """

    data: np.ndarray
    mask: np.ndarray | None = None
    uncertainty: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the planes."""
        planes = (self.data, self.mask, self.uncertainty)
        return sum(p.nbytes for p in planes if p is not None)


def concatenate_bands(bands: list[Combined]) -> Combined:
    """Row bands of one image (in order) as one result; planes kept if every band has them."""
    data = np.concatenate([b.data for b in bands], axis=0)
    masks = [b.mask for b in bands if b.mask is not None]
    uncs = [b.uncertainty for b in bands if b.uncertainty is not None]
    if len(masks) != len(bands) or len(uncs) != len(bands):
        return Combined(data)
    return Combined(data, np.concatenate(masks, axis=0), np.concatenate(uncs, axis=0))
