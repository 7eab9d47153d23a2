"""Colour maps with a colour bar: scalar slices as PNG figures (``export RUN slices``).

:func:`colorbar_figure` turns ``[R, R]`` values into an ``[H, W, 3]`` uint8 image: the values in
the turbo ramp of :func:`tensorfield.engine.render.colorize_depth` (minimum to maximum), a
vertical colour bar to its right with the values at its ends and middle, and a title above.
Text is drawn with Pillow's built-in bitmap font (no font files, no matplotlib).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tensorfield.engine.render import colorize_depth
from torch import Tensor

BAR_WIDTH = 16
LABEL_WIDTH = 72
MARGIN = 8
TITLE_HEIGHT = 16


def _label(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def display_values(values: Tensor, log: bool = False) -> tuple[Tensor, bool]:
    """The values to colour: ``log10 |values|`` (floored at 1e-300) when ``log``; non-finite
    entries become NaN. Returns them (float64) and whether any finite value is left."""
    values = values.detach().double().cpu()
    if log:
        values = torch.log10(values.abs().clamp_min(1e-300))
    values = torch.where(torch.isfinite(values), values, torch.full_like(values, math.nan))
    return values, bool(torch.isfinite(values).any())


def colorbar_figure(values: Tensor, title: str = "", log: bool = False) -> np.ndarray:
    """``[R, C]`` values -> ``[H, W, 3]`` uint8 figure with a colour bar (module docstring).

    Args:
        values: the scalar field; NaN or infinite entries are drawn black.
        title: text above the map (e.g. ``"kretschmann  t = 0"``).
        log: colour ``log10 |values|`` (curvature scalars span orders of magnitude); the bar's
            labels are then the exponents.
    """
    from PIL import Image, ImageDraw

    shown, any_finite = display_values(values, log)
    finite = torch.isfinite(shown)
    low = float(shown[finite].min()) if any_finite else 0.0
    high = float(shown[finite].max()) if any_finite else 1.0
    image = colorize_depth(torch.where(finite, shown, torch.full_like(shown, low)), alpha=finite.double(), near=low, far=high)
    rows, cols = image.shape[:2]
    ramp = torch.linspace(high, low, rows, dtype=torch.float64)[:, None].expand(rows, BAR_WIDTH)
    bar = colorize_depth(ramp, near=low, far=high)
    height = rows + 2 * MARGIN + TITLE_HEIGHT
    width = cols + 3 * MARGIN + BAR_WIDTH + LABEL_WIDTH
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    top = MARGIN + TITLE_HEIGHT
    canvas[top : top + rows, MARGIN : MARGIN + cols] = image
    bar_left = 2 * MARGIN + cols
    canvas[top : top + rows, bar_left : bar_left + BAR_WIDTH] = bar
    figure = Image.fromarray(canvas)
    draw = ImageDraw.Draw(figure)
    draw.rectangle([bar_left - 1, top - 1, bar_left + BAR_WIDTH, top + rows], outline=(0, 0, 0))
    text_left = bar_left + BAR_WIDTH + 4
    for fraction in (0.0, 0.5, 1.0):
        y = top + fraction * (rows - 1)
        value = high + fraction * (low - high)
        draw.line([bar_left + BAR_WIDTH, y, bar_left + BAR_WIDTH + 3, y], fill=(0, 0, 0))
        draw.text((text_left, max(top, min(y - 5, top + rows - 11))), _label(value), fill=(0, 0, 0))
    caption = f"{title}  (log10 |value|)" if log else title
    draw.text((MARGIN, 3), caption, fill=(0, 0, 0))
    return np.asarray(figure)
