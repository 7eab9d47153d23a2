"""Seconds per frame of the viewer's render path on an Einstein field (no window needed).

Times exactly what the viewer's render thread runs
(:func:`tensorfield.app.viewer.worker.render_request`) on an einfield run (``--run``, else
``einfield_small`` trained here for ``--steps`` steps into ``runs/viewer_bench_einfield``):

* the lensed camera view at the dataset camera, at each ``--sizes`` height, after one frame that
  builds the Christoffel grid (timed on its own: ``grid_build_s``; later frames reuse it);
* slice frames (the figure with its colour bar) of ``g_tt`` and ``log10 |kretschmann|`` at the
  same heights (curvature: second derivatives of the network at every sample).

Prints one JSON line.

    python benchmarks/viewer_einfield.py
    python benchmarks/viewer_einfield.py --run runs/ef --sizes 16 32 64 128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def seconds(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="an einfield run (default: train einfield_small)")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the run it trains")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the extrapolation warning of lensed renders

    from tensorfield.app.cli import main as cli
    from tensorfield.app.viewer.session import load_session
    from tensorfield.app.viewer.worker import FrameRequest, SliceView, render_request

    run = Path(args.run) if args.run else ROOT / "runs" / "viewer_bench_einfield"
    if args.run is None and not (run / "config.yaml").exists():
        assert cli(["train", "einfield_small", "--out", str(run), "--no-progress", f"steps={args.steps}", "eval_every=0"]) == 0
    session = load_session(run)
    model = session.model
    camera = session.default_view()

    def frame(height: int, slice_view=None) -> FrameRequest:
        return FrameRequest(camera, height, height, None, None, "rgb", (0.0, 0.0, 0.0), slice=slice_view)

    start = time.perf_counter()
    render_request(model, frame(args.sizes[0]))  # builds and keeps the Christoffel grid
    first = time.perf_counter() - start
    lensed = {str(size): round(seconds(lambda: render_request(model, frame(size)), args.repeats), 3) for size in args.sizes}
    slices = {}
    for name, log in (("g_tt", False), ("kretschmann", True)):
        view = SliceView(dataclasses.replace(model.default_slice(), component=name), log)
        slices[f"{name}{'_log' if log else ''}"] = {
            str(size): round(seconds(lambda: render_request(model, frame(size, view)), args.repeats), 3) for size in args.sizes
        }
    print(json.dumps({
        "run": str(run),
        "threads": args.threads,
        "load_average": round(os.getloadavg()[0], 2),
        "first_lensed_frame_s": round(first, 3),
        "grid_resolution": list(model.lensing_settings(None).grid_resolution),
        "lensed_s_per_frame": lensed,
        "slice_s_per_frame": slices,
    }))


if __name__ == "__main__":
    main()
