"""Publishing files written atomically: ``tempfile.mkstemp`` creates them private (mode 0600);
outputs meant for people and other programs get the mode a plain ``open`` would have given."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set it straight back
    os.umask(mask)
    return mask


def publish(temporary: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give ``temporary`` the default file mode (0666 minus the umask) and rename it over ``path``."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)
    return Path(path)
