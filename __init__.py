"""tensorfield: reconstruct 3D and 4D neural fields.

Subpackages follow the data flow: ``datasets`` (cameras, loaders, synthetic scenes) ->
``engine`` (trainer, metrics, checkpoints, export) -> ``fields`` (model families) ->
``cuda`` (shared rendering kernels with CPU paths). ``app`` (CLI, viewer) drives them all.

Importing the package is cheap: no hardware is probed and no extension is compiled.
"""

__version__ = "0.1.0"
