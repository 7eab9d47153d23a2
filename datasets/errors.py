"""The one exception every loader raises for bad input data.

A :class:`DatasetError` message is a single line of the form ``<file>: <problem>``, where
``<file>`` is the offending file relative to the scene root when it lies inside it (e.g.
``transforms_train.json: frame 3 transform_matrix is not 4x4 (got 3x4)``), so a user can fix the
data without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path


def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` relative to ``root`` when it lies inside it, else as given (POSIX separators)."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            try:
                return path.resolve().relative_to(Path(root).resolve()).as_posix()
            except ValueError:
                pass
    return path.as_posix()


def one_line(text: object) -> str:
    """Collapse ``text`` (e.g. an underlying exception's message) to one stripped line."""
    return " ".join(str(text).split())


class DatasetError(ValueError):
    """Bad or unsupported input data.

    Args:
        path: the file (or folder) at fault; shown relative to ``root`` when inside it.
        problem: what is wrong with it; newlines are collapsed so the message stays one line.
        root: scene root used to shorten ``path``.

    Attributes:
        path: the file as shown in the message.
        problem: the problem as shown in the message.
    """

    def __init__(self, path: str | Path, problem: str, *, root: str | Path | None = None):
        self.path = display_path(path, root)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (_rebuild, (self.path, self.problem))


def _rebuild(path: str, problem: str) -> DatasetError:
    return DatasetError(path, problem)
