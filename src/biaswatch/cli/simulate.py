"""``biaswatch simulate``: realistic raw bias frames into a camera's watched directory.

The frames come from biaswatch.testing.camera, the same simulated camera the
tests and benchmarks use.
"""

from __future__ import annotations

import argparse

from biaswatch.config import load_config
from biaswatch.testing.camera import simulate


def write_simulated_frames(args: argparse.Namespace) -> int:
    """Write the frames one by one, naming each as it lands."""
    config = load_config(args.config)
    camera = config.camera(args.camera)
    frames = args.frames or camera.expected_frames
    print(f"writing {frames} bias frames for {camera.name} into {camera.watch[0]}")
    paths = simulate(
        camera,
        frames=frames,
        interval=args.interval,
        seed=args.seed,
        on_frame=lambda p: print(f"  wrote {p.name}", flush=True),
    )
    print(f"done: {len(paths)} frames")
    return 0
