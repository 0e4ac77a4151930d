"""Running the preview drawings: after publication, one at a time, each in its own process.

This module does not import matplotlib (publish/figure.py does, in the drawing
process only), so the service itself stays small.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# A fresh interpreter, not a fork of the service (threads) or of the combine server.
_CONTEXT = multiprocessing.get_context("spawn")
# At a stop, the preview being drawn gets this long (a drawing takes 1-3 s, most
# of it imports); previews not started yet are skipped, so a stop stays quick.
STOP_SECONDS = 5.0


def _draw(master: Path, single: Path, ncombine: int) -> None:
    from biaswatch.publish.figure import draw_from_files

    draw_from_files(master, single, ncombine)


class Previews:
    """Previews to draw, one process at a time (called from the service's main loop)."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[Path, Path, int]] = deque()
        self._drawing: tuple[multiprocessing.process.BaseProcess, Path] | None = None

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being drawn."""
        return self._drawing is None and not self._waiting

    def queue(self, master: Path, single: Path, ncombine: int) -> None:
        """Draw this master's preview when the one before is done."""
        self._waiting.append((master, single, ncombine))
        self.step()

    def step(self) -> None:
        """Notice a finished drawing; start the next."""
        if self._drawing is not None:
            process, master = self._drawing
            if process.is_alive():
                return
            if process.exitcode != 0:
                log.warning("master.preview_failed", path=str(master), exitcode=process.exitcode)
            self._drawing = None
        if self._waiting:
            master, single, ncombine = self._waiting.popleft()
            process = _CONTEXT.Process(target=_draw, args=(master, single, ncombine), daemon=True)
            process.start()
            self._drawing = (process, master)

    def finish(self, timeout: float = STOP_SECONDS) -> None:
        """At a stop: let the drawing in progress end within ``timeout``; skip the rest."""
        skipped = [str(master) for master, _, _ in self._waiting]
        if self._drawing is not None:
            process, master = self._drawing
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(timeout)  # reaped: a reload's exec would leave it a zombie
                skipped.insert(0, str(master))
        if skipped:
            log.warning("preview.skipped_at_stop", masters=skipped)
        self._drawing = None
        self._waiting.clear()
