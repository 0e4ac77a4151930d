"""The preview drawing: what it leaves on disk when the disk is full."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from biaswatch.publish.figure import preview_path, write_preview


def test_a_preview_that_fails_to_save_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A savefig that stops half-way on a full disk leaves neither a PNG nor its temporary."""

    def half_written(self: Figure, name: Path, **_kwargs: Any) -> None:
        Path(name).write_bytes(b"\x89PNG half")  # what a full disk leaves of it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_written)
    final = tmp_path / "bias_cam_2030-01-14_01_8x8-1x1.fits"
    image = np.zeros((8, 8), dtype=np.float32)
    with pytest.raises(OSError, match="No space"):
        write_preview(image, image, 3, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not preview_path(final).exists()
