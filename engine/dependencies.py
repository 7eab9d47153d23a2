"""Optional and system dependencies: import them or say, in one line, what to install.

Some wheels this package uses link system libraries that minimal Linux images lack (open3d's
links ``libusb-1.0``; PyQt6's the EGL/GL, xkbcommon and fontconfig libraries). Importing them
then fails deep inside the wheel with ``ImportError: libusb-1.0.so.0: cannot open shared object
file``. :func:`require` turns that, and a plain missing Python package, into a
:class:`MissingDependency` whose message names the library and the command that installs it, so
the CLI prints one line instead of a traceback.

:func:`missing_system_libraries` checks, without importing anything, which of the shared
libraries a feature needs the dynamic loader cannot find (used by ``tensorfield doctor``).
"""

from __future__ import annotations

import ctypes
import importlib
import re
import shutil
from types import ModuleType

# shared object -> Debian/Ubuntu package that provides it
SYSTEM_PACKAGES = {
    "libusb-1.0.so.0": "libusb-1.0-0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libX11.so.6": "libx11-6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libgomp.so.1": "libgomp1",
}

# feature -> the shared libraries its wheels link (checked with ldd on the wheels' .so files)
FEATURE_LIBRARIES = {
    "open3d (TSDF meshes of Gaussian models, .pcd point clouds)": ("libusb-1.0.so.0", "libgomp.so.1"),
    "viewer (PyQt6)": (
        "libEGL.so.1",
        "libGL.so.1",
        "libxkbcommon.so.0",
        "libfontconfig.so.1",
        "libfreetype.so.6",
        "libX11.so.6",
        "libglib-2.0.so.0",
        "libdbus-1.so.3",
    ),
}

# import name -> pip requirement that provides it
PIP_NAMES = {
    "open3d": "open3d",
    "PyQt6": "'tensorfield[viewer]'",
    "gsplat": "'tensorfield[cuda]'",
    "pycolmap": "pycolmap",
    "trimesh": "trimesh",
    "skimage": "scikit-image",
    "lpips": "'tensorfield[lpips]'",
    "nerfstudio": "'tensorfield[nerfstudio]'",
}

_SHARED_OBJECT = re.compile(r"(lib[\w.+-]+\.so(?:\.\d+)*)")


class MissingDependency(ImportError):
    """A dependency that cannot be imported, described in one line with the fix."""


def install_hint(library: str) -> str:
    """The command that installs the system package providing ``library`` (a ``.so`` name)."""
    package = SYSTEM_PACKAGES.get(library)
    if package is None:
        return f"install the system package that provides {library}"
    prefix = "" if is_root() else "sudo "
    return f"{prefix}apt-get install -y {package}"


def is_root() -> bool:
    try:
        import os

        return os.geteuid() == 0
    except AttributeError:  # pragma: no cover - not POSIX
        return False


def explain_import_error(module: str, error: BaseException, purpose: str = "") -> str:
    """One line saying why ``module`` did not import and how to fix it."""
    text = str(error)
    needed = f" (needed for {purpose})" if purpose else ""
    library = _SHARED_OBJECT.search(text)
    if library and ("cannot open shared object" in text or "No such file" in text):
        name = library.group(1)
        return f"{module}{needed} cannot load the system library {name}: {install_hint(name)}"
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        install = f"pip install {PIP_NAMES.get(top, top)}"
        if top == module.split(".")[0]:
            return f"{module}{needed} is not installed: {install}"
        return f"{module}{needed} needs {top}, which is not installed: {install}"
    first = text.splitlines()[0] if text else type(error).__name__
    return f"{module}{needed} failed to import: {first}"


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` with a one-line fix.

    Args:
        module: import name, e.g. ``"open3d"``.
        purpose: what it is needed for, for the message (``"TSDF meshes"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:  # also OSError-flavoured loader failures, which are ImportErrors
        raise MissingDependency(explain_import_error(module, error, purpose)) from None


def library_available(library: str) -> bool:
    """Whether the dynamic loader finds the shared library ``library`` (e.g. ``libusb-1.0.so.0``)."""
    try:
        ctypes.CDLL(library)
        return True
    except OSError:
        return False


def missing_system_libraries() -> dict[str, list[str]]:
    """Feature -> the shared libraries it needs that this machine lacks (empty lists omitted)."""
    missing = {}
    for feature, libraries in FEATURE_LIBRARIES.items():
        absent = [name for name in libraries if not library_available(name)]
        if absent:
            missing[feature] = absent
    return missing


def apt_command(libraries: list[str]) -> str | None:
    """``apt-get install`` line for ``libraries``, or ``None`` without apt-get."""
    if shutil.which("apt-get") is None:
        return None
    packages = sorted({SYSTEM_PACKAGES[name] for name in libraries if name in SYSTEM_PACKAGES})
    if not packages:
        return None
    prefix = "" if is_root() else "sudo "
    return f"{prefix}apt-get install -y {' '.join(packages)}"
