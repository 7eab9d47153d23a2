"""Native builder of the TensoRF shader input (:class:`tensorfield.fields.encoding.FeatureShader`).

``tf_shader_input`` (``cuda/csrc/encoding.c``) writes ``[f, d, PE(f), PE(d)]`` into one buffer in
a single parallel pass, deriving each octave from the first by the double-angle formulas. It is
compiled on first use by :mod:`tensorfield.cuda.native`; without a compiler (or with
``TENSORFIELD_NATIVE=0``) :func:`shader_input_native` returns ``None`` and the shader builds the
input in torch.
"""

from __future__ import annotations

import ctypes

import torch
from tensorfield.cuda.native import NativeLibrary
from torch import Tensor


def _declare(library: ctypes.CDLL) -> None:
    library.tf_shader_input.restype = None
    library.tf_shader_input.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4 + [ctypes.c_void_p]


_LIBRARY = NativeLibrary("shader_input", "encoding.c", ["-fopenmp", "-fno-math-errno"], _declare)


def native_library() -> ctypes.CDLL | None:
    """The compiled encoder, or ``None`` (no compiler, ``TENSORFIELD_NATIVE=0``)."""
    return _LIBRARY.get()


def shader_input_native(f: Tensor, d: Tensor, feature_pe: int, view_pe: int) -> Tensor | None:
    """``[S, D + 3 + 2 D F + 6 V]`` shader input ``[f, d, PE(f), PE(d)]`` in one native pass.

    Float32 CPU only; ``None`` when the kernel is unavailable. Octaves follow from the first by
    the double-angle formulas, as :func:`tensorfield.fields.encoding._encode_into` (values agree
    with it to ~2 ulp).
    """
    library = native_library()
    if library is None or f.dtype != torch.float32 or d.dtype != torch.float32 or f.device.type != "cpu":
        return None
    f, d = f.contiguous(), d.contiguous()
    samples, dim = f.shape
    x = f.new_empty(samples, dim + 3 + 2 * dim * feature_pe + 6 * view_pe)
    library.tf_shader_input(f.data_ptr(), d.data_ptr(), samples, dim, int(feature_pe), int(view_pe), x.data_ptr())
    return x
