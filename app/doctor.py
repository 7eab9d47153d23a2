"""``tensorfield doctor``: what this machine can run, and the system libraries it lacks.

Prints one line per component (Python packages, system libraries, devices). With ``--install``
it installs the missing system libraries with apt-get when it can (root, Debian/Ubuntu), so a
fresh machine gets everything from the README's set-up line; otherwise it prints the one command
to run. It never fails the command line it is part of: a machine without apt-get or without the
rights gets the command to run instead, and the features that need the library say so when used.
"""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys

from tensorfield.engine.dependencies import (
    FEATURE_LIBRARIES,
    apt_command,
    is_root,
    missing_system_libraries,
)

PACKAGES = (
    ("torch", "training and rendering"),
    ("gsplat", "CUDA Gaussian rasterisation (GPU only)"),
    ("PyQt6", "the desktop viewer"),
    ("open3d", "TSDF meshes of Gaussian models, .pcd files"),
    ("trimesh", "mesh cleaning and files"),
    ("skimage", "marching cubes, SSIM"),
    ("pycolmap", "tensorfield process (poses from video)"),
    ("tinycudann", "fused hash-grid encodings (optional, GPU)"),
)


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import version

        name = {"skimage": "scikit-image", "PyQt6": "PyQt6"}.get(module, module)
        return version(name)
    except Exception:  # noqa: BLE001 - a package without metadata is still installed
        return "installed"


def _apt_install(packages_command: str) -> bool:
    """Run ``apt-get install`` (after ``apt-get update`` if the first try fails); quiet."""
    words = packages_command.split()
    for attempt in (words, None):
        if attempt is None:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
            attempt = words
        result = subprocess.run(attempt, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return True
    return False


def run_doctor(install: bool = False, out=sys.stdout) -> int:
    """Print the report; with ``install`` fetch missing system libraries. Returns 0."""
    print(f"python        {platform.python_version()} ({sys.executable})", file=out)
    for module, purpose in PACKAGES:
        version = _version(module)
        state = version if version is not None else "not installed"
        print(f"{module:<13} {state:<16} {purpose}", file=out)
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if cuda else "none (CPU paths only)"
        print(f"{'cuda':<13} {device}", file=out)
    except Exception as error:  # noqa: BLE001 - report, do not fail
        print(f"{'cuda':<13} unknown ({type(error).__name__})", file=out)

    missing = missing_system_libraries()
    if not missing:
        print(f"{'system libs':<13} all present ({sum(len(v) for v in FEATURE_LIBRARIES.values())} checked)", file=out)
        return 0
    libraries = sorted({name for names in missing.values() for name in names})
    for feature, names in missing.items():
        print(f"{'system libs':<13} {feature} needs {', '.join(names)}", file=out)
    command = apt_command(libraries)
    if command is None:
        print(f"{'system libs':<13} install the packages that provide {', '.join(libraries)} with your system's package manager", file=out)
        return 0
    if install and is_root():
        print(f"{'system libs':<13} installing: {command}", file=out)
        if _apt_install(command) and not missing_system_libraries():
            print(f"{'system libs':<13} installed", file=out)
        else:
            print(f"{'system libs':<13} apt-get could not install them; run: {command}", file=out)
        return 0
    print(f"{'system libs':<13} run: {command}", file=out)
    return 0
