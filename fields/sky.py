"""What a lensed ray shows: the celestial sphere (procedural stars or an image) and a thin disk.

:func:`tensorfield.fields.lensing.render_lensed` traces each pixel's light ray backwards; a ray
that escapes takes the colour of the sky in its final direction, one that crosses the disk the
colour of the disk there. Both are pure functions of their inputs (no state), so a frame is
reproducible bit for bit.

* :class:`StarField`: deterministic stars from hashed cells of a cube map (several layers of cell
  sizes for bright sparse and faint dense stars), over a faint colour gradient with a latitude /
  longitude grid every 30 degrees, so that lensing shows as bent lines and a distorted gradient.
* :class:`ImageSky`: a user's equirectangular image (longitude across, latitude down).
* :func:`disk_colour`: a thin disk's colour from its temperature profile
  ``T ~ r^(-3/4) (1 - sqrt(r_in / r))^(1/4)`` (Shakura & Sunyaev 1973 / Page & Thorne 1974 shape)
  shifted by the redshift factor ``g`` (``T_obs = g T``, bolometric intensity ``~ g^4``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def hash32(values: Tensor) -> Tensor:
    """Wellons' ``lowbias32`` integer hash of int64 ``values`` (the low 32 bits), as int64 in
    ``[0, 2^32)``: a deterministic, well-mixed pseudo-random number per integer key."""
    x = values & _MASK32
    x = (x ^ (x >> 16)) & _MASK32
    x = (x * 0x7FEB352D) & _MASK32
    x = (x ^ (x >> 15)) & _MASK32
    x = (x * 0x846CA68B) & _MASK32
    return (x ^ (x >> 16)) & _MASK32


def _unit(hashed: Tensor) -> Tensor:
    """``[0, 1)`` floats from hashes (24 random bits)."""
    return (hashed & 0xFFFFFF).double() / float(1 << 24)


def cube_face(directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cube-map coordinates of unit ``directions [N, 3]``: ``face [N]`` int64 in ``0..5``
    (``+x, -x, +y, -y, +z, -z``) and ``u, v [N]`` in ``[-1, 1]`` on that face."""
    magnitude = directions.abs()
    axis = magnitude.argmax(dim=-1)
    major = directions.gather(-1, axis[:, None])[:, 0]
    face = 2 * axis + (major < 0).long()
    # the two other coordinates, divided by the major one
    other_a = torch.tensor([1, 0, 0], device=directions.device)[axis]
    other_b = torch.tensor([2, 2, 1], device=directions.device)[axis]
    denom = major.abs().clamp_min(1e-12)
    u = directions.gather(-1, other_a[:, None])[:, 0] / denom
    v = directions.gather(-1, other_b[:, None])[:, 0] / denom
    return face, u, v


class StarField:
    """A procedural, deterministic star field over a faint gradient and coordinate grid.

    Args:
        seed: changes every star (the same seed gives the same sky on any device).
        layers: ``(cells per cube-face side, probability of a star per cell, brightness, width)``
            per layer; the width is the star's Gaussian sigma in cell units.
        grid: brightness of the latitude / longitude lines (every 30 degrees; 0 = none).
    """

    def __init__(
        self,
        seed: int = 0,
        layers: tuple[tuple[int, float, float, float], ...] = (
            (24, 0.5, 1.6, 0.05),
            (64, 0.45, 0.9, 0.07),
            (160, 0.35, 0.5, 0.09),
        ),
        grid: float = 0.12,
    ) -> None:
        self.seed = int(seed)
        self.layers = layers
        self.grid = float(grid)

    def __call__(self, directions: Tensor) -> Tensor:
        """``[N, 3]`` linear RGB (in ``[0, 1]``) seen along unit ``directions [N, 3]``."""
        directions = directions.double()
        directions = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        colour = self._gradient(directions)
        if self.grid > 0:
            colour = colour + self.grid * self._grid_lines(directions)[:, None] * torch.tensor(
                [0.55, 0.65, 0.9], dtype=torch.float64, device=directions.device
            )
        face, u, v = cube_face(directions)
        for index, (cells, probability, brightness, width) in enumerate(self.layers):
            colour = colour + self._stars(face, u, v, index, cells, probability, brightness, width)
        return colour.clamp(0, 1)

    def _gradient(self, d: Tensor) -> Tensor:
        """A dim sky that tells the hemispheres and azimuths apart."""
        north = 0.5 * (d[:, 2] + 1)
        azimuth = torch.atan2(d[:, 1], d[:, 0])
        r = 0.03 + 0.05 * (1 - north) + 0.02 * torch.cos(azimuth)
        g = 0.02 + 0.02 * north + 0.015 * torch.sin(azimuth)
        b = 0.06 + 0.07 * north
        return torch.stack([r, g, b], dim=-1)

    def _grid_lines(self, d: Tensor) -> Tensor:
        """``[N]`` in ``[0, 1]``: near a meridian or parallel every 30 degrees (0.25 deg wide)."""
        step = math.radians(30.0)
        width = math.radians(0.25)
        latitude = torch.asin(d[:, 2].clamp(-1, 1))
        longitude = torch.atan2(d[:, 1], d[:, 0])
        to_parallel = (latitude / step - torch.round(latitude / step)).abs() * step
        to_meridian = (
            (longitude / step - torch.round(longitude / step)).abs() * step * torch.cos(latitude)
        )
        lines = torch.exp(-((to_parallel / width) ** 2)) + torch.exp(-((to_meridian / width) ** 2))
        return lines.clamp(max=1.0)

    def _stars(
        self,
        face: Tensor,
        u: Tensor,
        v: Tensor,
        layer: int,
        cells: int,
        probability: float,
        brightness: float,
        width: float,
    ) -> Tensor:
        """``[N, 3]`` the light of the star (if any) in each direction's cell of one layer."""
        cu = ((u + 1) * 0.5 * cells).clamp(0, cells - 1e-9)
        cv = ((v + 1) * 0.5 * cells).clamp(0, cells - 1e-9)
        i, j = cu.floor().long(), cv.floor().long()
        key = ((((self.seed * 7 + layer) * 6 + face) * cells + i) * cells + j) * 5
        present = _unit(hash32(key)) < probability
        # star centre inside the cell, away from its edges (its glow is not cut off)
        su = 0.2 + 0.6 * _unit(hash32(key + 1))
        sv = 0.2 + 0.6 * _unit(hash32(key + 2))
        level = brightness * _unit(hash32(key + 3)) ** 3
        temperature = _unit(hash32(key + 4))
        distance2 = (cu - i - su) ** 2 + (cv - j - sv) ** 2
        intensity = torch.where(
            present, level * torch.exp(-0.5 * distance2 / width**2), torch.zeros_like(level)
        )
        # cool orange, white, hot blue
        orange = torch.tensor([1.0, 0.72, 0.45], dtype=torch.float64, device=u.device)
        white = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, device=u.device)
        blue = torch.tensor([0.62, 0.74, 1.0], dtype=torch.float64, device=u.device)
        t = temperature[:, None]
        tint = torch.where(
            t < 0.5, orange + (white - orange) * (2 * t), white + (blue - white) * (2 * t - 1)
        )
        return intensity[:, None] * tint


class ImageSky:
    """An equirectangular image as the celestial sphere: column = longitude ``atan2(y, x)`` from
    ``-pi`` (left) to ``pi``, row = colatitude from ``+z`` (top) to ``-z``.

    Args:
        path: an image file imageio reads (PNG, JPEG, EXR...).

    Raises:
        ValueError: the file is missing, unreadable or not an RGB(A)/grey image (one line naming it).
    """

    def __init__(self, path: str | Path) -> None:
        import imageio.v3 as iio
        import numpy as np

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: background image not found")
        try:
            array = np.asarray(iio.imread(path))
        except (OSError, ValueError, RuntimeError, TypeError) as err:  # imageio: by plugin
            raise ValueError(f"{path}: cannot read the background image ({err})") from None
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4) or min(array.shape[:2]) < 2:
            raise ValueError(f"{path}: background must be an RGB image, got shape {array.shape}")
        scale = 65535.0 if array.dtype == np.uint16 else 255.0 if array.dtype == np.uint8 else 1.0
        image = torch.from_numpy(array[..., :3].astype(np.float32) / scale)
        self.image = image.permute(2, 0, 1)[None].contiguous()  # [1, 3, H, W]
        self.path = path

    def __call__(self, directions: Tensor) -> Tensor:
        """``[N, 3]`` bilinear colour along unit ``directions [N, 3]`` (wraps in longitude)."""
        d = directions.double()
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        longitude = torch.atan2(d[:, 1], d[:, 0]) / math.pi  # [-1, 1] left to right
        colatitude = torch.acos(d[:, 2].clamp(-1, 1)) / math.pi * 2 - 1  # [-1, 1] top to bottom
        image = self.image.to(directions.device)
        # wrap in longitude: one extra column on each side
        padded = torch.cat([image[..., -1:], image, image[..., :1]], dim=-1)
        width = image.shape[-1]
        x = longitude * width / (width + 2)
        grid = torch.stack([x, colatitude], dim=-1).float()[None, :, None]  # [1, N, 1, 2]
        sample = F.grid_sample(
            padded, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return sample[0, :, :, 0].T.double()


def make_sky(background: str, seed: int = 0):
    """``"stars"`` -> :class:`StarField`, anything else is an image path (:class:`ImageSky`)."""
    return StarField(seed) if background == "stars" else ImageSky(background)


def disk_temperature(radius: Tensor, inner: float) -> Tensor:
    """``[N]`` relative temperature of a thin disk at cylindrical ``radius``:
    ``(r / r_in)^(-3/4) (1 - sqrt(r_in / r))^(1/4)``, normalised to 1 at its maximum
    (``r = 49/36 r_in``); 0 inside ``r_in``."""
    x = (radius / inner).clamp_min(1.0)
    shape = x ** (-0.75) * (1 - x ** (-0.5)).clamp_min(0) ** 0.25
    peak = (49 / 36) ** (-0.75) * (1 - (36 / 49) ** 0.5) ** 0.25
    return shape / peak


def blackbody_ramp(temperature: Tensor) -> Tensor:
    """``[N, 3]`` an approximate blackbody tint for a relative temperature (1 = the disk's
    hottest ring seen without redshift): deep red at 0.3, orange, white near 1.2, blue above."""
    stops_t = torch.tensor(
        [0.0, 0.3, 0.6, 0.9, 1.2, 2.0], dtype=torch.float64, device=temperature.device
    )
    stops_c = torch.tensor(
        [
            [0.0, 0.0, 0.0],
            [0.6, 0.05, 0.0],
            [1.0, 0.4, 0.05],
            [1.0, 0.8, 0.45],
            [1.0, 0.97, 0.9],
            [0.7, 0.8, 1.0],
        ],
        dtype=torch.float64,
        device=temperature.device,
    )
    t = temperature.double().clamp(0, 2.0)
    index = torch.searchsorted(stops_t, t, right=True).clamp(1, len(stops_t) - 1)
    t0, t1 = stops_t[index - 1], stops_t[index]
    w = ((t - t0) / (t1 - t0))[:, None]
    return stops_c[index - 1] * (1 - w) + stops_c[index] * w


def disk_colour(radius: Tensor, redshift: Tensor, inner: float, exposure: float = 1.0) -> Tensor:
    """``[N, 3]`` RGB in ``[0, 1]`` of the disk at cylindrical ``radius [N]`` seen with redshift
    factor ``g = nu_obs / nu_emit`` ``[N]`` (1 = no shift): tint of ``g T``, intensity
    ``g^4 T^4`` relative to the hottest ring, tone-mapped by ``1 - exp(-exposure * I)``."""
    temperature = disk_temperature(radius, inner) * redshift
    intensity = (redshift**4 * disk_temperature(radius, inner) ** 4).clamp_min(0)
    tone = 1 - torch.exp(-2.0 * exposure * intensity)
    return (blackbody_ramp(temperature) * tone[:, None]).clamp(0, 1)
