"""Options every ray-marched radiance field shares (TensoRF, Strivec): shader, density, marching,
alpha mask and the network's optimisation.

:class:`RadianceFieldConfig` holds them once, with the values both official codes use; a family's
config inherits it and adds its own representation (factor grids, local tensors), its schedule and
whatever it sets differently (redefining an option in the subclass replaces its default and help).
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorfield.fields.config import ImageMethodConfig, option


@dataclass
class RadianceFieldConfig(ImageMethodConfig):
    """The shared options of the ray-marched radiance fields (TensoRF's lego values)."""

    # shader (TensoRF's MLP_Fea)
    app_dim: int = option(27, "Appearance features after the linear basis (input of the shader).", group="model", minimum=1)
    view_pe: int = option(2, "Positional-encoding frequencies of the view direction (MLP_Fea).", group="model", minimum=0)
    feature_pe: int = option(2, "Positional-encoding frequencies of the appearance features (MLP_Fea).", group="model", minimum=0)
    mlp_hidden: int = option(128, "Width of the shader's two hidden layers (official featureC).", group="model", minimum=1)
    # density and marching
    density_shift: float = option(-10.0, "Added to the density feature before softplus.", group="ray marching")
    distance_scale: float = option(25.0, "Segment length multiplier: alpha = 1 - exp(-sigma * step * distance_scale).", group="ray marching", above=0)
    weight_threshold: float = option(1e-4, "Colour is evaluated only where the sample weight exceeds this.", group="ray marching", minimum=0, maximum=1)
    transmittance_threshold: float = option(1e-4, "Stop a ray once its transmittance drops below this (0 = never, as the official code).", group="ray marching", minimum=0, maximum=1)
    march_round_samples: int = option(64, "Ray-marching granularity of early termination: samples per ray in the first round (doubling after); speed only, not values.", group="ray marching", minimum=1)
    color_chunk: int = option(16384, "Run the shader MLP in chunks of this many samples (smaller temporaries; 0 = one chunk).", group="ray marching", minimum=0)
    color_chunk_render: int = option(4096, "Shader chunk without gradients (rendering): temporaries that stay in cache, ~1.3x faster than 16384 on a 2-core CPU.", group="ray marching", minimum=0)
    # alpha mask
    alpha_mask_threshold: float = option(1e-4, "Alpha above which a (max-pooled) grid vertex counts as occupied.", group="alpha mask", minimum=0, maximum=1)
    alpha_mask_kernel: int = option(3, "Max-pool kernel applied to the dense alpha before thresholding.", group="alpha mask", minimum=1, odd=True)
    # optimisation of the network
    lr_network: float = option(1e-3, "Adam learning rate of the basis and the shader MLP (official lr_basis).", group="optimisation", minimum=0)
    lr_decay_ratio: float = option(0.1, "Learning rates decay exponentially to this fraction over the run.", group="optimisation", above=0, maximum=1)
    lr_upsample_reset: bool = option(True, "Reset learning rates at each upsampling (else continue from the decayed value).", group="optimisation")
    adam_betas: list[float] = option([0.9, 0.99], "Adam betas (read by the trainer).", group="optimisation", minimum=0, below=1, lengths=(2,))
