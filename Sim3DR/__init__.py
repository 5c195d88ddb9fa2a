"""Sim3DR: vox3d's compiled z-buffer rasterizer (C++ kernel + Cython binding).

Use it through :mod:`vox3d.face.render`; :mod:`Sim3DR._sim3dr` is the raw binding.
"""
