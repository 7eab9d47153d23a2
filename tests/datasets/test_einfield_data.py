"""User metric samples for Einstein fields (datasets/einfield_data.py): layouts, one one-line
error per problem, and training / evaluation on a file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tensorfield.datasets.einfield_data import (
    COMPONENTS,
    components_to_matrix,
    derivative_components,
    load_metric_samples,
    to_components,
)
from tensorfield.datasets.errors import DatasetError
from tensorfield.datasets.spacetimes import Spacetime, SpacetimeParameters
from tensorfield.fields.relativity import metric_jets


def schwarzschild_samples(count: int = 40, seed: int = 0):
    """``coords [N, 4]``, ``metric [N, 4, 4]``, ``jacobian [N, 4, 4, 4]`` of Kerr-Schild Schwarzschild."""
    generator = torch.Generator().manual_seed(seed)
    coords = torch.rand(count, 4, generator=generator, dtype=torch.float64) * 2 + 2
    coords[:, 0] = 0
    jets = metric_jets(Spacetime("schwarzschild_ks", SpacetimeParameters()).metric, coords, order=1)
    return coords.numpy(), jets.metric.numpy(), jets.jacobian.numpy()


def test_component_order_and_round_trips():
    assert COMPONENTS[:4] == ((0, 0), (0, 1), (0, 2), (0, 3)) and COMPONENTS[-1] == (3, 3)
    _, metric, jacobian = schwarzschild_samples(3)
    metric, jacobian = torch.from_numpy(metric), torch.from_numpy(jacobian)
    torch.testing.assert_close(components_to_matrix(to_components(metric)), metric)
    assert derivative_components(jacobian).shape == (3, 10, 4)
    torch.testing.assert_close(derivative_components(jacobian)[:, 4, 2], jacobian[:, 1, 1, 2])


@pytest.mark.parametrize("layout", ["npz_4x4", "npz_10", "h5", "npy_14", "npy_20"])
def test_layouts_load_the_same_samples(layout, tmp_path):
    coords, metric, jacobian = schwarzschild_samples()
    components = to_components(torch.from_numpy(metric)).numpy()
    if layout == "npz_4x4":
        path = tmp_path / "s.npz"
        np.savez(path, coords=coords, metric=metric, jacobian=jacobian)
    elif layout == "npz_10":
        path = tmp_path / "s.npz"
        np.savez(path, coords=coords, metric=components, jacobian=derivative_components(torch.from_numpy(jacobian)).numpy())
    elif layout == "h5":
        path = tmp_path / "s.h5"
        with h5py.File(path, "w") as handle:
            handle["coords"], handle["metric"], handle["jacobian"] = coords, metric, jacobian
    else:
        path = tmp_path / "s.npy"
        np.save(path, np.concatenate([coords, components if layout == "npy_14" else metric.reshape(-1, 16)], axis=1))
    samples = load_metric_samples(path)
    np.testing.assert_allclose(samples.coords.numpy(), coords)
    np.testing.assert_allclose(samples.metric.numpy(), metric, rtol=0, atol=1e-15)
    if layout.startswith("npy"):
        assert samples.jacobian is None
    else:
        np.testing.assert_allclose(samples.jacobian.numpy(), jacobian, rtol=0, atol=1e-15)


def _bad(tmp_path, change):
    coords, metric, jacobian = schwarzschild_samples(10)
    arrays = {"coords": coords, "metric": metric, "jacobian": jacobian}
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as caught:
        load_metric_samples(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path.as_posix()}: ")
    return message


def test_wrong_metric_shape(tmp_path):
    message = _bad(tmp_path, lambda a: a.update(metric=a["metric"][:, :3, :3]))
    assert "metric must be [N, 4, 4] or [N, 10] with N = 10" in message and "[10, 3, 3]" in message


def test_wrong_coords_shape(tmp_path):
    assert "coords must be [N, 4]" in _bad(tmp_path, lambda a: a.update(coords=a["coords"][:, :3]))


def test_wrong_jacobian_shape(tmp_path):
    assert "jacobian must be [N, 4, 4, 4] or [N, 10, 4]" in _bad(tmp_path, lambda a: a.update(jacobian=a["jacobian"][:, :, :, :2]))


def test_missing_metric(tmp_path):
    assert "missing 'metric'" in _bad(tmp_path, lambda a: a.pop("metric"))


def test_nan_names_the_sample(tmp_path):
    def change(arrays):
        arrays["metric"][6, 1, 1] = np.nan

    assert "sample 6: metric holds NaN or infinite values" in _bad(tmp_path, change)


def test_infinite_coordinate(tmp_path):
    def change(arrays):
        arrays["coords"][2, 3] = np.inf

    assert "sample 2: coords holds NaN or infinite values" in _bad(tmp_path, change)


def test_asymmetric_metric(tmp_path):
    def change(arrays):
        arrays["metric"][4, 0, 2] += 0.1

    assert "sample 4: metric is not symmetric" in _bad(tmp_path, change)


def test_riemannian_signature(tmp_path):
    def change(arrays):
        arrays["metric"][3] = np.eye(4)

    message = _bad(tmp_path, change)
    assert "sample 3: metric is not Lorentzian" in message and "one negative and three positive" in message


def test_two_negative_eigenvalues(tmp_path):
    def change(arrays):
        arrays["metric"][1] = np.diag([-1.0, -1.0, 1.0, 1.0])

    assert "sample 1: metric is not Lorentzian" in _bad(tmp_path, change)


def test_degenerate_determinant(tmp_path):
    def change(arrays):
        arrays["metric"][5] = np.diag([-1.0, 1.0, 1.0, 0.0])

    assert "sample 5: metric is degenerate (det g = " in _bad(tmp_path, change)


def test_asymmetric_jacobian(tmp_path):
    def change(arrays):
        arrays["jacobian"][7, 0, 1, 2] += 0.5

    assert "sample 7: jacobian is not symmetric" in _bad(tmp_path, change)


def test_unsupported_format_and_missing_file(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("1,2,3")
    with pytest.raises(DatasetError, match=r"s\.csv: unsupported metric sample format '\.csv'"):
        load_metric_samples(path)
    with pytest.raises(DatasetError, match="no such metric sample file"):
        load_metric_samples(tmp_path / "none.npz")
    corrupt = tmp_path / "c.npz"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"c\.npz: cannot read metric samples"):
        load_metric_samples(corrupt)
    table = tmp_path / "t.npy"
    np.save(table, np.zeros((5, 7)))
    with pytest.raises(DatasetError, match=r"must be \[N, 14\] or \[N, 20\]"):
        load_metric_samples(table)


def test_training_on_user_samples_evaluates_held_out_metric_and_jacobian(tmp_path):
    from tensorfield.app.commands import packaged_config
    from tensorfield.engine.config import load_config
    from tensorfield.engine.trainer import Trainer

    coords, metric, jacobian = schwarzschild_samples(200, seed=3)
    path = tmp_path / "samples.npz"
    np.savez(path, coords=coords, metric=metric, jacobian=jacobian)
    config = load_config(str(packaged_config("einfield_small.yaml")), ["steps=30", "hidden=16", "layers=1", "dtype=float64", "checkpoint_every=0", "eval_fraction=0.2"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer.from_config(config, tmp_path / "run", data_path=str(path))
        before = trainer.evaluate(save_renders=False)
        summary = trainer.train(progress=False)
    finally:
        torch.set_num_threads(threads)
    data = trainer.data
    assert len(data.test_index) == 40 and len(set(data.test_index.tolist()) & set(data.train_index.tolist())) == 0
    assert trainer.config.domain_min[1] == pytest.approx(float(coords[:, 1].min()))  # the samples' box
    after = summary["eval"]
    assert set(after) >= {"metric_rel_l2", "jacobian_rel_l2", "num_points"} and after["num_points"] == 40
    assert after["metric_rel_l2"] < before["metric_rel_l2"]
