"""COLMAP sparse-model point readers: ``points3D.txt`` and ``points3D.bin``.

Both formats hold, per 3D point, an id, its world position, an 8-bit colour, a reprojection error
and a track (the images and keypoints that observe it); only position and colour are returned.
Positions are in COLMAP's world frame, which is the world frame of the camera poses COLMAP wrote
(and of LLFF's ``poses_bounds.npy``, which only permutes the camera axes, not the world).

* **Text** (``points3D.txt``): ``#`` comment lines, then one point a line:
  ``POINT3D_ID X Y Z R G B ERROR TRACK[] as (IMAGE_ID, POINT2D_IDX)``; the track may be empty.
* **Binary** (``points3D.bin``, little endian): ``uint64`` point count, then per point
  ``uint64 id, 3 x float64 xyz, 3 x uint8 rgb, float64 error, uint64 track length`` followed by
  ``track length x (int32 image id, int32 point2D index)``.

Every malformed file raises a one-line :class:`~.errors.DatasetError` naming it (and the line or
point at fault).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .errors import DatasetError, one_line

# id, xyz, rgb, error, track length: the fixed-size head of one binary point record
_BINARY_HEAD = struct.Struct("<Q3d3BdQ")
_TRACK_ENTRY_BYTES = 8  # int32 image id + int32 point2D index


def read_points3d(path: Path, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Points and colours of a COLMAP ``points3D.txt`` or ``points3D.bin`` (by extension).

    Args:
        path: the file.
        root: scene root, to shorten the path in error messages.

    Returns:
        ``points [P, 3]`` float32 in COLMAP's world frame and ``colors [P, 3]`` float32 in [0, 1].

    Raises:
        DatasetError: unreadable, truncated or malformed file, or non-finite coordinates.
    """
    path = Path(path)
    if path.suffix.lower() == ".bin":
        points, colors = read_points3d_binary(path, root)
    else:
        points, colors = read_points3d_text(path, root)
    if not np.isfinite(points).all():
        bad = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise DatasetError(path, f"point {bad} has NaN/inf coordinates", root=root)
    return points, colors


def _read_bytes(path: Path, root: Path | None) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "missing file", root=root) from None
    except OSError as error:
        raise DatasetError(path, f"unreadable file ({one_line(error.strerror)})", root=root) from None


def read_points3d_text(path: Path, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``points3D.txt`` (see the module docstring for the layout)."""
    try:
        text = _read_bytes(path, root).decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(path, "not a text file (use points3D.bin for binary)", root=root) from None
    points, colors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 8:
            raise DatasetError(
                path,
                f"line {number}: expected POINT3D_ID X Y Z R G B ERROR [track], got {len(words)} values",
                root=root,
            )
        if (len(words) - 8) % 2:
            raise DatasetError(
                path, f"line {number}: track must be (IMAGE_ID, POINT2D_IDX) pairs", root=root
            )
        try:
            xyz = [float(w) for w in words[1:4]]
            rgb = [int(w) for w in words[4:7]]
            float(words[7])
        except ValueError:
            raise DatasetError(path, f"line {number}: non-numeric value", root=root) from None
        if not all(0 <= c <= 255 for c in rgb):
            raise DatasetError(path, f"line {number}: colour outside 0..255", root=root)
        points.append(xyz)
        colors.append(rgb)
    return _as_arrays(points, colors)


def read_points3d_binary(path: Path, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``points3D.bin`` (see the module docstring for the layout)."""
    data = _read_bytes(path, root)
    if len(data) < 8:
        raise DatasetError(path, "truncated: no point count", root=root)
    (count,) = struct.unpack_from("<Q", data, 0)
    # each point needs at least its fixed-size head: reject absurd counts before allocating
    if count > (len(data) - 8) // _BINARY_HEAD.size:
        raise DatasetError(
            path,
            f"truncated: header says {count} points but the file holds at most "
            f"{(len(data) - 8) // _BINARY_HEAD.size}",
            root=root,
        )
    points = np.empty((count, 3), dtype=np.float64)
    colors = np.empty((count, 3), dtype=np.uint8)
    offset = 8
    for i in range(count):
        if offset + _BINARY_HEAD.size > len(data):
            raise DatasetError(path, f"truncated in point {i} of {count}", root=root)
        _, x, y, z, r, g, b, _, track = _BINARY_HEAD.unpack_from(data, offset)
        offset += _BINARY_HEAD.size + track * _TRACK_ENTRY_BYTES
        if offset > len(data):
            raise DatasetError(path, f"truncated in the track of point {i} of {count}", root=root)
        points[i] = (x, y, z)
        colors[i] = (r, g, b)
    if offset != len(data):
        raise DatasetError(
            path, f"{len(data) - offset} unexpected bytes after the last of {count} points", root=root
        )
    return points.astype(np.float32), colors.astype(np.float32) / 255.0


def _as_arrays(points: list, colors: list) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(colors, dtype=np.float32).reshape(-1, 3) / 255.0
    return xyz.astype(np.float32), rgb


def write_points3d_text(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write ``[P, 3]`` points and ``[P, 3]`` colours in [0, 1] as a ``points3D.txt`` (empty
    tracks, zero error); for tests and for handing points to COLMAP-based tools."""
    rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(int)
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]  # fmt: skip
    for i, (p, c) in enumerate(zip(np.asarray(points, dtype=np.float64).tolist(), rgb.tolist()), start=1):
        lines.append(f"{i} {p[0]!r} {p[1]!r} {p[2]!r} {c[0]} {c[1]} {c[2]} 0")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_points3d_binary(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write ``[P, 3]`` points and ``[P, 3]`` colours in [0, 1] as a ``points3D.bin`` (empty
    tracks, zero error)."""
    rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(int)
    chunks = [struct.pack("<Q", len(points))]
    for i, (p, c) in enumerate(zip(np.asarray(points, dtype=np.float64), rgb), start=1):
        chunks.append(_BINARY_HEAD.pack(i, *p.tolist(), *c.tolist(), 0.0, 0))
    Path(path).write_bytes(b"".join(chunks))
