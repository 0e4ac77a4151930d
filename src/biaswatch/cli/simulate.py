"""``biaswatch simulate``: realistic raw bias frames into a camera's watched directory.

The frames come from biaswatch.testing.camera (one image, the camera's own
sections: ``--layout single``) or biaswatch.testing.layouts (image extensions,
amplifiers in one image, a binned window), the frames the tests use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biaswatch.config import load_config
from biaswatch.testing.camera import simulate
from biaswatch.testing.layouts import LAYOUT_KINDS, simulate_layout


def write_simulated_frames(args: argparse.Namespace) -> int:
    """Write the frames one by one, naming each as it lands."""
    config = load_config(args.config)
    camera = config.camera(args.camera)
    frames = args.frames or camera.expected_frames
    layout = next(kind for kind in LAYOUT_KINDS if kind == getattr(args, "layout", "single"))
    print(f"writing {frames} bias frames ({layout}) for {camera.name} into {camera.watch[0]}")
    if layout == "single":
        paths = simulate(
            camera, frames=frames, interval=args.interval, seed=args.seed, on_frame=_wrote
        )
    else:
        try:
            paths = simulate_layout(
                camera,
                layout,
                frames=frames,
                interval=args.interval,
                seed=args.seed,
                on_frame=_wrote,
            )
        except ValueError as exc:  # a layout the camera's config does not describe
            print(f"biaswatch simulate: {exc}", file=sys.stderr)
            return 2
    print(f"done: {len(paths)} frames")
    return 0


def _wrote(path: Path) -> None:
    print(f"  wrote {path.name}", flush=True)
