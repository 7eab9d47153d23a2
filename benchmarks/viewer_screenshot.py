"""Save a screenshot of the viewer window, so anyone can see what it looks like.

Opens the real window on Qt's offscreen platform (or on an X server: under ``xvfb-run`` or with
``--xvfb`` when ``Xvfb`` is installed), loads a run, waits for the full-resolution frame, and
writes the window (panel, frame and status bar) as a PNG. A dynamic run is shown mid-scrub
(``--time``, default 0.5) with the time controls visible.

    python benchmarks/viewer_screenshot.py --run runs/lego --out viewer.png
    python benchmarks/viewer_screenshot.py                 # trains a tiny 4D Gaussian run on the dynamic synthetic scene
    xvfb-run -a python benchmarks/viewer_screenshot.py --height 384 --out docs/viewer_4d.png   # the README's picture
    xvfb-run -a python benchmarks/viewer_screenshot.py --run runs/dnerf_4d --time 0.4

Prints one JSON line (the PNG's path and what was shown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_run(kind: str) -> Path:
    """A small run on the synthetic scene (cached under runs/): 4D Gaussians on the dynamic
    scene, TensoRF (the demo config) on the static one."""
    from tensorfield.datasets.synthetic import make_scene
    from tensorfield.engine.checkpoint import latest_checkpoint
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    root = ROOT / "runs" / f"viewer_screenshot_{kind}"
    run = root / "run"
    if latest_checkpoint(run) is None:
        if kind == "dynamic":
            data = make_scene(root / "data", kind=kind, resolution=96, n_train=40, n_test=2, n_val=0)
            config = load_config(ROOT / "configs" / "gaussians4d_small.yaml", ["steps=600", "densify_until=450", "eval_every=0"])
        else:
            data = make_scene(root / "data", kind=kind, resolution=64, n_train=24, n_test=2, n_val=1)
            config = load_config(ROOT / "configs" / "demo.yaml", ["steps=200", "eval_every=0"])
        trainer = Trainer.from_config(config, run, data_path=data)
        trainer.train(progress=False, final_eval=False)
        trainer.close()
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="run folder or checkpoint (default: a tiny synthetic run)")
    parser.add_argument("--out", default="viewer_screenshot.png")
    parser.add_argument("--time", type=float, default=0.5, help="time shown for dynamic scenes")
    parser.add_argument("--mode", default="rgb", choices=["rgb", "depth", "alpha"])
    parser.add_argument("--height", type=int, default=None, help="render height in pixels (default: the dataset's)")
    parser.add_argument("--size", type=int, nargs=2, default=(1100, 700), metavar=("W", "H"))
    parser.add_argument("--xvfb", action="store_true", help="re-run itself under xvfb-run (needs Xvfb)")
    args = parser.parse_args()

    if args.xvfb and "DISPLAY" not in os.environ:
        if shutil.which("xvfb-run") is None:
            print("xvfb-run not found (apt-get install xvfb); falling back to the offscreen platform", file=sys.stderr)
        else:
            argv = [a for a in sys.argv if a != "--xvfb"]
            return subprocess.call(["xvfb-run", "-a", sys.executable, *argv])
    if "DISPLAY" not in os.environ and "WAYLAND_DISPLAY" not in os.environ:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    run = Path(args.run) if args.run else tiny_run("dynamic")
    from PyQt6.QtWidgets import QApplication
    from tensorfield.app.viewer.window import ViewerWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = ViewerWindow()
    window.resize(*args.size)
    window.show()
    window.open_run(run)
    deadline = time.monotonic() + 300
    while window.session is None and window.error_dialog is None and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    if window.session is None:
        message = window.error_dialog.text() if window.error_dialog is not None else "timed out"
        print(json.dumps({"error": message}))
        return 1
    if window.session.is_dynamic:
        window.set_time(args.time)
    window.mode_combo.setCurrentText(args.mode)
    if args.height:
        window.height_spin.setValue(args.height)
    window.orbit(0.35, 0.15)
    while not window.wait_idle() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):  # let the status bar and frame paint
        app.processEvents()
        time.sleep(0.01)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out))
    result = {
        "screenshot": str(out),
        "run": str(run),
        "method": window.session.method,
        "dynamic": window.session.is_dynamic,
        "time": window.time_value if window.session.is_dynamic else None,
        "frame": list(window.current_frame.shape[:2]) if window.current_frame is not None else None,
        "platform": QApplication.platformName(),
    }
    window.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
