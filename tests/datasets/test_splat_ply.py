"""Splat PLY I/O (tensorfield.engine.export): the 3DGS layout, round trips, atomic writes, errors.

(Kept with the dataset tests: it is file-format I/O that the N3V / points work delivered.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorfield.engine.export import (
    ExportError,
    read_splat_ply,
    splat_ply_properties,
    write_splat_ply,
)


def random_splat(n: int, sh_coefficients: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "means": rng.normal(size=(n, 3)),
        "sh_dc": rng.normal(size=(n, 3)),
        "sh_rest": rng.normal(size=(n, sh_coefficients - 1, 3)),
        "opacity_logits": rng.normal(size=n),
        "log_scales": rng.normal(size=(n, 3)) - 3,
        "quats": rng.normal(size=(n, 4)),
    }


def test_header_is_the_original_3dgs_layout(tmp_path):
    """Degree 3: 62 float properties, names as the original construct_list_of_attributes."""
    path = write_splat_ply(tmp_path / "splat.ply", **random_splat(7, 16))
    data = path.read_bytes()
    header, body = data.split(b"end_header\n")
    expected = ["ply", "format binary_little_endian 1.0", "element vertex 7"]
    expected += [f"property float {name}" for name in
                 ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                 + [f"f_rest_{i}" for i in range(45)]
                 + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]]  # fmt: skip
    assert header.decode("ascii").splitlines() == expected
    assert len(body) == 7 * 62 * 4
    assert splat_ply_properties(15) == [line.split()[-1] for line in expected[3:]]


def test_values_sit_where_the_original_puts_them(tmp_path):
    """f_rest is channel-major: f_rest_{c (K-1) + k} = features_rest[:, k, c]."""
    splat = random_splat(5, 9)
    path = write_splat_ply(tmp_path / "splat.ply", **splat)
    body = path.read_bytes().split(b"end_header\n")[1]
    table = np.frombuffer(body, dtype="<f4").reshape(5, -1)
    names = splat_ply_properties(8)
    column = {name: table[:, i] for i, name in enumerate(names)}
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    assert np.array_equal(column["y"], f32(splat["means"][:, 1]))
    assert np.array_equal(column["nx"], np.zeros(5, np.float32))
    assert np.array_equal(column["f_dc_2"], f32(splat["sh_dc"][:, 2]))
    for k in range(8):
        for c in range(3):
            assert np.array_equal(column[f"f_rest_{c * 8 + k}"], f32(splat["sh_rest"][:, k, c]))
    assert np.array_equal(column["opacity"], f32(splat["opacity_logits"]))
    assert np.array_equal(column["scale_1"], f32(splat["log_scales"][:, 1]))
    assert np.array_equal(column["rot_0"], f32(splat["quats"][:, 0]))  # w first


@pytest.mark.parametrize("sh_coefficients", [1, 4, 16])
def test_round_trip(tmp_path, sh_coefficients):
    splat = random_splat(11, sh_coefficients, seed=sh_coefficients)
    tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in splat.items()}
    write_splat_ply(tmp_path / "splat.ply", **tensors)
    back = read_splat_ply(tmp_path / "splat.ply")
    assert len(back) == 11 and back.sh_rest.shape == (11, sh_coefficients - 1, 3)
    for name, value in splat.items():
        assert getattr(back, name).dtype == np.float32
        assert np.array_equal(getattr(back, name), np.asarray(value, dtype=np.float32)), name


def test_write_is_atomic(tmp_path):
    path = write_splat_ply(tmp_path / "splat.ply", **random_splat(3, 4))
    before = path.read_bytes()
    bad = random_splat(3, 4)
    bad["means"][1, 2] = np.nan
    with pytest.raises(ExportError, match="NaN/inf"):
        write_splat_ply(path, **bad)
    with pytest.raises(ExportError, match=r"quats must be \[3x4\], got \[3, 3\]"):
        write_splat_ply(path, **{**random_splat(3, 4), "quats": np.zeros((3, 3))})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["splat.ply"]


def test_reader_accepts_other_orders_and_types(tmp_path):
    """Properties in another order, doubles, no normals, an extra element: still read."""
    names = ["opacity", "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    table = np.arange(2 * len(names), dtype=">f8").reshape(2, -1)
    header = ["ply", "format binary_big_endian 1.0", "comment made by hand", "element vertex 2"]
    header += [f"property double {n}" for n in names] + ["element extra 1", "property uchar a", "end_header"]
    path = tmp_path / "hand.ply"
    path.write_bytes(("\n".join(header) + "\n").encode() + table.tobytes() + b"\x07")
    splat = read_splat_ply(path)
    assert np.array_equal(splat.opacity_logits, [0.0, 14.0]) and splat.means.tolist()[1] == [15, 16, 17]
    assert splat.sh_rest.shape == (2, 0, 3)


def test_reader_errors_are_one_line(tmp_path):
    path = write_splat_ply(tmp_path / "splat.ply", **random_splat(4, 4))
    data = path.read_bytes()
    cases = {
        b"hello": "not a PLY file",
        data[:-10]: "truncated: element 'vertex' needs",
        data.replace(b"property float opacity\n", b"property float opacityx\n"): "not a Gaussian splat PLY: missing properties opacity",
        data.replace(b"format binary_little_endian", b"format ascii"): "format ascii is not supported",
        data.replace(b"property float f_rest_8\n", b"property float f_rest_9\n"): "f_rest properties must be",
    }  # fmt: skip
    for content, problem in cases.items():
        path.write_bytes(content)
        with pytest.raises(ExportError) as info:
            read_splat_ply(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: {problem}"), message
    with pytest.raises(ExportError, match="missing file"):
        read_splat_ply(tmp_path / "absent.ply")
