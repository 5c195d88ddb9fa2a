"""vox3d: build Voxceleb-3D (voices paired with 3D face shape) and train voice-to-face models."""

__version__ = "0.1.0"
