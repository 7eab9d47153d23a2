"""Tests of :mod:`tensorfield.fields.encoding` (positional encoding, the MLP_Fea shader)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tensorfield.fields import encoding
from tensorfield.fields.encoding import FeatureShader, positional_encoding


def test_positional_encoding_layout():
    x = torch.tensor([[0.3, -0.7]])
    expected = torch.tensor([[
        math.sin(0.3), math.sin(0.6), math.sin(-0.7), math.sin(-1.4),
        math.cos(0.3), math.cos(0.6), math.cos(-0.7), math.cos(-1.4),
    ]])
    torch.testing.assert_close(positional_encoding(x, 2), expected)


def test_positional_encoding_gradient():
    x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: positional_encoding(v, 3), (x,))
    assert positional_encoding(x, 0).shape == (12, 0)


def test_shader_layout_and_zero_last_bias():
    shader = FeatureShader(27, view_pe=2, feature_pe=2, hidden=128)
    assert shader.mlp[0].in_features == 27 + 3 + 2 * 2 * 27 + 2 * 2 * 3 == 150
    assert [m.out_features for m in shader.mlp if isinstance(m, torch.nn.Linear)] == [128, 128, 3]
    assert torch.count_nonzero(shader.mlp[-1].bias) == 0
    assert list(shader.state_dict()) == [f"mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
    features, dirs = torch.randn(5, 27), F.normalize(torch.randn(5, 3), dim=-1)
    manual = torch.cat([features, dirs, positional_encoding(features, 2), positional_encoding(dirs, 2)], -1)
    torch.testing.assert_close(shader.encode(features, dirs), manual)
    torch.testing.assert_close(shader(features, dirs), torch.sigmoid(shader.mlp(manual)))


@pytest.mark.skipif(encoding.onednn_linear() is None, reason="no oneDNN linear kernel")
@pytest.mark.parametrize("feature_pe,view_pe", [(2, 2), (0, 3), (1, 0)])
def test_fused_cpu_path_matches_plain_mlp(feature_pe, view_pe, monkeypatch):
    torch.manual_seed(0)
    shader = FeatureShader(6, view_pe=view_pe, feature_pe=feature_pe, hidden=16)
    with torch.no_grad():
        shader.mlp[-1].bias.normal_()
    features = torch.randn(300, 6)
    dirs = F.normalize(torch.randn(300, 3), dim=-1)
    grad = torch.randn(300, 3)

    def run():
        shader.zero_grad()
        f = features.clone().requires_grad_()
        out = shader(f, dirs)
        out.backward(grad)
        return [out.detach(), f.grad] + [p.grad.clone() for p in shader.parameters()]

    assert shader._fused_ok(features)
    fused = run()
    monkeypatch.setattr(encoding, "onednn_linear", lambda: None)
    assert not shader._fused_ok(features)
    plain = run()
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_float64_uses_the_plain_path():
    shader = FeatureShader(4, 1, 1, 8).double()
    features = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    out = shader(features, F.normalize(torch.randn(10, 3, dtype=torch.float64), dim=-1))
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda f: shader(f, torch.ones(10, 3, dtype=torch.float64) / math.sqrt(3)), (features,))


def reference_input(features: torch.Tensor, dirs: torch.Tensor, feature_pe: int, view_pe: int) -> torch.Tensor:
    """``[f, d, PE(f), PE(d)]`` in float64 from the float32 values (sin/cos of each octave directly)."""
    f, d = features.double(), dirs.double()
    return torch.cat([f, d, positional_encoding(f, feature_pe), positional_encoding(d, view_pe)], dim=-1)


@pytest.mark.parametrize("feature_pe,view_pe", [(2, 2), (0, 4), (5, 1), (9, 0)])
def test_native_shader_input_matches_float64(feature_pe, view_pe):
    g = torch.Generator().manual_seed(feature_pe * 10 + view_pe)
    features = torch.randn(700, 27, generator=g) * 4
    features[:50] *= 3000  # beyond the polynomial's range reduction: the libm fall-back
    features[50, 3], features[51, 4], features[52, 5] = float("inf"), float("-inf"), float("nan")
    dirs = F.normalize(torch.randn(700, 3, generator=g), dim=-1)
    native = encoding.shader_input_native(features, dirs, feature_pe, view_pe)
    if native is None:
        pytest.skip("no C compiler")
    expected = reference_input(features, dirs, feature_pe, view_pe)
    assert native.shape == expected.shape
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isnan(native), torch.isnan(expected))
    # one octave from sin/cos (~1 ulp), then double-angle steps (about an ulp each, 3 at most)
    assert float((native.double() - expected)[finite].abs().max()) < 4e-6


def test_torch_fallback_encoding_matches_float64():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(200, 5, generator=g) * 3
    for octaves in (1, 2, 4, 6):
        x = torch.empty(200, 2 * 5 * octaves)
        encoding._encode_into(x, values, 0, octaves)
        torch.testing.assert_close(x.double(), positional_encoding(values.double(), octaves), rtol=0, atol=4e-6)
