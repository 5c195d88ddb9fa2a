"""vox3d: build Voxceleb-3D (voices paired with 3D face shape) and train voice-to-face models."""

from vox3d import torch_setup as _torch_setup

__version__ = "0.1.0"

# Every process that imports vox3d gets exact torch CPU maths (oneMKL warm-up, see
# vox3d/torch_setup.py): at once when torch is imported, else right after its import.
_torch_setup.install()
