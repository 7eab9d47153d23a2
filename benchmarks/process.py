"""Seconds per stage of ``tensorfield process`` and the registered fraction on the textured
synthetic orbit video (datasets/synthetic_capture.py), at two frame counts; prints one JSON line.

    python benchmarks/process.py [--frames 24 48] [--size 320 240]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tensorfield.datasets.capture import CaptureSettings, process_capture
from tensorfield.datasets.synthetic_capture import make_capture_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 48], help="frames to process (default: 24 48)")
    parser.add_argument("--size", type=int, nargs=2, default=[320, 240], help="video width height (default: 320 240)")
    parser.add_argument("--camera-model", default="SIMPLE_PINHOLE", help="COLMAP camera model (default: SIMPLE_PINHOLE)")
    args = parser.parse_args()
    results = {"video": {"frames": max(args.frames), "size": args.size}, "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        video = make_capture_video(Path(scratch) / "orbit.mp4", frames=max(args.frames), size=tuple(args.size), supersample=False)
        results["video"]["render_s"] = round(time.perf_counter() - began, 2)
        for frames in args.frames:
            settings = CaptureSettings(frames=frames, camera_model=args.camera_model, min_registered=0.0)
            began = time.perf_counter()
            try:
                result = process_capture([video], Path(scratch) / f"data_{frames}", settings, progress=False)
                run = {"frames": frames, "registered": result.registered, "registered_fraction": round(result.registered / result.sfm_images, 3),
                       "mean_reprojection_error_px": round(result.mean_reprojection_error, 3), "points": result.points,
                       "stage_s": {k: round(v, 2) for k, v in result.seconds.items()}}  # fmt: skip
            except ValueError as error:  # no model at all: report it as a zero registered fraction
                run = {"frames": frames, "registered_fraction": 0.0, "error": str(error)}
            run["total_s"] = round(time.perf_counter() - began, 2)
            results["runs"].append(run)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
