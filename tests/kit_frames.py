"""Test helper: whole synthetic frames with one face each and their truth, from the one
synthetic-face kit (vox3d.fitting.regressor_render, the renderer of the corpus and of the
ICT regressor's training frames)."""

from __future__ import annotations

from conftest import require

from vox3d.paths import ICT_FACEKIT


def face_frames(n: int, seed: int = 0) -> list:
    """Samples ``0 .. n-1`` of data seed `seed` (:class:`vox3d.fitting.regressor_render.FrameSample`:
    ``frame`` 224x224 RGB uint8, ``landmarks`` (68, 2) frame px, ``face_box``, ``pose_frame``,
    ``alpha``, ``beta``, ``euler``): a fresh person and session each, near-frontal (yaw,
    pitch, roll uniform within +-25, +-10, +-5 degrees), no camera shake, a JPEG round trip
    (the kit always compresses; the fit stage reads compressed video too)."""
    from vox3d.fitting import regressor_render as rr

    require(ICT_FACEKIT)
    cfg = rr.RenderConfig(group=1, p_wide=1.0, yaw_deg=25.0, pitch_deg=10.0, roll_deg=5.0,
                          p_blur=0.0, codec="jpeg")  # fmt: skip
    kit = rr.Kit.load(cfg)
    return [rr.render_sample(kit, seed, i) for i in range(n)]
