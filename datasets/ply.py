"""A small PLY point reader (ASCII and binary), enough for SfM point clouds.

Reads the ``vertex`` element's ``x, y, z`` and, when present, ``red, green, blue`` (integers are
scaled by their type's maximum, floats taken as they are). Elements before ``vertex`` are skipped
(in binary files only when they have no list properties, which is always the case for point
clouds written by COLMAP, nerfstudio, Open3D or 3DGS).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def read_ply_points(path: Path, root: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (and colours) of a PLY file.

    Args:
        path: ``.ply`` file.
        root: scene root, to shorten the path in error messages.

    Returns:
        ``points [P, 3]`` float32 and ``colors [P, 3]`` float32 in [0, 1] (or ``None``).

    Raises:
        DatasetError: not a PLY, unsupported layout, truncated data.
    """

    def fail(problem: str) -> DatasetError:
        return DatasetError(path, problem, root=root)

    try:
        data = path.read_bytes()
    except OSError as error:
        raise fail(f"unreadable point cloud ({error.strerror})") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise fail("not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()

    fmt = None
    elements: list[
        tuple[str, int, list[tuple[str, str | None]]]
    ] = []  # name, count, (prop, dtype|None=list)
    for line in header[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append((words[-1], None))
            elif words[1] in _TYPES:
                elements[-1][2].append((words[2], _TYPES[words[1]]))
            else:
                raise fail(f"unknown PLY property type {words[1]}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise fail(f"unsupported PLY format {fmt}")
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise fail("no vertex element")

    offset, line_offset = body_start, 0
    for name, count, props in elements:
        if name == "vertex":
            break
        if fmt != "ascii" and any(dtype is None for _, dtype in props):
            raise fail(f"cannot skip element '{name}' with list properties before the vertices")
        offset += count * sum(np.dtype(dtype).itemsize for _, dtype in props)
        line_offset += count
    _, count, props = elements[names.index("vertex")]
    if any(dtype is None for _, dtype in props):
        raise fail("vertex element has list properties")
    prop_names = [p for p, _ in props]
    if not {"x", "y", "z"} <= set(prop_names):
        raise fail("vertex element has no x, y, z")

    if fmt == "ascii":
        lines = (
            data[body_start:]
            .decode("ascii", errors="replace")
            .splitlines()[line_offset : line_offset + count]
        )
        if len(lines) < count:
            raise fail(f"truncated: {len(lines)} of {count} vertices")
        try:
            table = (
                np.loadtxt(lines, dtype=np.float64, ndmin=2) if count else np.zeros((0, len(props)))
            )
        except ValueError as error:
            raise fail(f"bad vertex line ({error})") from None
        if table.shape[1] < len(props):
            raise fail("vertex lines have fewer values than properties")
        columns = {p: table[:, i] for i, p in enumerate(prop_names)}
        dtypes = dict(props)
    else:
        order = "<" if fmt == "binary_little_endian" else ">"
        record = np.dtype([(p, order + dtype) for p, dtype in props])
        if len(data) - offset < count * record.itemsize:
            raise fail(f"truncated: needs {count * record.itemsize} bytes of vertices")
        table = np.frombuffer(data, dtype=record, count=count, offset=offset)
        columns = {p: table[p] for p in prop_names}
        dtypes = dict(props)

    points = np.stack([columns["x"], columns["y"], columns["z"]], axis=1).astype(np.float32)
    colors = None
    if {"red", "green", "blue"} <= set(prop_names):
        channels = []
        for channel in ("red", "green", "blue"):
            values = np.asarray(columns[channel], dtype=np.float64)
            kind = np.dtype(dtypes[channel])
            if kind.kind in "iu":
                values = values / float(np.iinfo(kind).max)
            channels.append(values)
        colors = np.clip(np.stack(channels, axis=1), 0.0, 1.0).astype(np.float32)
    return points, colors


def write_ply_points(
    path: Path, points: np.ndarray, colors: np.ndarray | None = None, binary: bool = True
) -> None:
    """Write ``[P, 3]`` points (and ``[P, 3]`` colours in [0, 1], stored as uchar) as PLY."""
    points = np.asarray(points, dtype=np.float32)
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        f"element vertex {len(points)}",
    ]
    header += [f"property float {axis}" for axis in "xyz"]
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        header += [f"property uchar {c}" for c in ("red", "green", "blue")]
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header.append("end_header")
    table = np.zeros(len(points), dtype=fields)
    for i, axis in enumerate("xyz"):
        table[axis] = points[:, i]
    if colors is not None:
        rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)
        for i, channel in enumerate(("red", "green", "blue")):
            table[channel] = rgb[:, i]
    with open(path, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            handle.write(table.tobytes())
        else:
            handle.writelines(
                (" ".join(str(v) for v in row.tolist()) + "\n").encode("ascii") for row in table
            )
