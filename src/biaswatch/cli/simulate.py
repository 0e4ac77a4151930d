"""``biaswatch simulate``: realistic raw bias frames into a camera's watched directory.

The frames come from biaswatch.testing.camera (one image, the camera's own
sections: ``--layout single``) or biaswatch.testing.layouts (image extensions,
amplifiers in one image, a binned window), the frames the tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import TextIO

from biaswatch.cli.common import EX_USAGE, command_config, fail
from biaswatch.testing.camera import simulate
from biaswatch.testing.layouts import LAYOUT_KINDS, simulate_layout


def write_simulated_frames(args: argparse.Namespace) -> int:
    """Write the frames one by one, naming each as it lands."""
    config = command_config(args.config)
    camera = config.camera(args.camera)
    frames = args.frames or camera.expected_frames
    layout = next(kind for kind in LAYOUT_KINDS if kind == getattr(args, "layout", "single"))
    # With --json, stdout carries the one object at the end; progress goes to stderr.
    out = sys.stderr if args.json else sys.stdout
    print(
        f"writing {frames} bias frames ({layout}) for {camera.name} into {camera.watch[0]}",
        file=out,
    )
    wrote = partial(_wrote, out=out)
    if layout == "single":
        paths = simulate(
            camera, frames=frames, interval=args.interval, seed=args.seed, on_frame=wrote
        )
    else:
        try:
            paths = simulate_layout(
                camera,
                layout,
                frames=frames,
                interval=args.interval,
                seed=args.seed,
                on_frame=wrote,
            )
        except ValueError as exc:  # a layout the camera's config does not describe
            return fail(args, EX_USAGE, str(exc))
    if args.json:
        done = {"camera": camera.name, "layout": layout, "frames": [str(p) for p in paths]}
        print(json.dumps(done))
    else:
        print(f"done: {len(paths)} frames")
    return 0


def _wrote(path: Path, out: TextIO) -> None:
    print(f"  wrote {path.name}", file=out, flush=True)
