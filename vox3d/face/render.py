"""Rendering meshes with the compiled Sim3DR rasterizer (the only Python caller of it).

Coordinates: image pixels, ``x`` right, ``y`` down, pixel ``(i, j)`` (row, column) has its
centre at ``(j + 0.5, i + 0.5)``; ``z`` larger = nearer the camera (orthographic view along
-z).  :func:`vox3d.params.to_image` produces exactly these coordinates.

Rules (exact; see ``Sim3DR/README.md``): vertices are snapped to 1/256 pixel; a pixel is
covered when its centre is inside the triangle, with the top-left rule on edges (shared
edges drawn exactly once, no cracks); nearest z wins (strict ``>``: on an exact tie the
earlier triangle / mesh stays); both sides of triangles are drawn unless ``cull`` says
otherwise (front = counter-clockwise in a y-up view, i.e. the outside of a model whose
triangles are CCW from outside, after the y flip of the 3DDFA-V2 projection); triangles
with NaN / inf vertices, out-of-range indices, zero area or a vertex beyond 2^20 pixels are
skipped.

Shading (deferred: each visible pixel is shaded once): the colour is the barycentric
interpolation of vertex colours (``colors (V, 3)`` in [0, 1], or a flat grey).  With a
:class:`Light`, the interpolated vertex normal is normalised per pixel (Phong shading) and
``colour * (ambient + sum_i c_i max(0, n.l_i)) + sum_i c_i ks max(0, r_i.v)^shininess``
is used, viewer ``v = (0, 0, 1)``, two-sided (normals of back faces are flipped).  Results
are clipped to [0, 1], scaled to 0..255, blended over the image with ``alpha`` and rounded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from Sim3DR import _sim3dr
from vox3d.params import euler_to_rotation

#: Flat grey used when a mesh has no vertex colours.
DEFAULT_COLOR = (0.75, 0.75, 0.75)
_CULL = {"none": 0, "back": 1, "front": 2}


@dataclass
class Light:
    """Ambient + directional lights (image axes: x right, y down, z towards the viewer).

    Attributes:
        ambient: ``(3,)`` ambient RGB term (multiplies the surface colour).
        directional: list of ``(direction (3,), color (3,))``; `direction` points from the
            surface towards the light (normalised here), e.g. ``(0, 0, 1)`` = from the camera.
        specular: Phong specular coefficient (0 = Lambert only).
        shininess: Phong exponent.
        shading: ``"phong"`` (default: the interpolated normal is lit at every pixel) or
            ``"gouraud"`` (lit per vertex, colours interpolated: faster, softer highlights).
    """

    ambient: Sequence[float] = (0.3, 0.3, 0.3)
    directional: list = field(default_factory=lambda: [((-0.3, -0.4, 1.0), (0.75, 0.75, 0.75))])
    specular: float = 0.0
    shininess: float = 16.0
    shading: str = "phong"

    @classmethod
    def lambert(cls, **kw) -> Light:
        """Ambient + one frontal-upper-left directional light, no specular."""
        return cls(**kw)

    @classmethod
    def phong(cls, specular: float = 0.25, shininess: float = 16.0, **kw) -> Light:
        """Like :meth:`lambert` plus a Phong specular highlight."""
        return cls(specular=specular, shininess=shininess, **kw)

    def _packed(self):
        ambient = np.asarray(self.ambient, dtype=np.float32).reshape(3)
        n = len(self.directional)
        dirs = np.zeros((n, 3), dtype=np.float32)
        cols = np.zeros((n, 3), dtype=np.float32)
        for k, (d, c) in enumerate(self.directional):
            d = np.asarray(d, dtype=np.float64).reshape(3)
            norm = np.linalg.norm(d)
            if not np.isfinite(norm) or norm == 0:
                raise ValueError(f"light direction {d} must be finite and non-zero")
            dirs[k] = d / norm
            cols[k] = np.asarray(c, dtype=np.float32).reshape(3)
        if self.shading not in ("phong", "gouraud"):
            raise ValueError(f"shading must be 'phong' or 'gouraud', got {self.shading!r}")
        return (
            ambient,
            dirs,
            cols,
            float(self.specular),
            float(self.shininess),
            self.shading == "gouraud",
        )


@dataclass
class Mesh:
    """One mesh to draw: ``vertices (V, 3)`` image coordinates, ``triangles (F, 3)``,
    optional ``colors (V, 3)`` in [0, 1], optional outward unit ``normals (V, 3)`` (image
    axes; computed when lighting needs them), flat ``color`` when `colors` is None."""

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    color: Sequence[float] = DEFAULT_COLOR

    def _packed(self):
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        t = np.ascontiguousarray(self.triangles, dtype=np.int32)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vertices must be (V, 3), got {v.shape}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {t.shape}")
        c = None
        if self.colors is not None:
            c = np.ascontiguousarray(self.colors, dtype=np.float32)
            if c.shape != v.shape:
                raise ValueError(f"colors must be {v.shape}, got {c.shape}")
        n = None
        if self.normals is not None:
            n = np.ascontiguousarray(self.normals, dtype=np.float32)
            if n.shape != v.shape:
                raise ValueError(f"normals must be {v.shape}, got {n.shape}")
        dc = np.asarray(self.color, dtype=np.float32).reshape(3)
        return (v, t, c, n, dc)


@dataclass
class RenderResult:
    """``image (H, W, 3) uint8``; ``depth (H, W) float32`` (image z of the visible
    surface, ``-inf`` where nothing is drawn); ``mask (H, W) bool`` (covered pixels).
    Debug extras when asked for: ``coverage (H, W) int32`` (number of triangles whose
    interior holds each pixel centre, depth ignored), ``tri_index`` / ``mesh_index``
    ``(H, W) int32`` (visible triangle and mesh, -1 where empty)."""

    image: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    coverage: np.ndarray | None = None
    tri_index: np.ndarray | None = None
    mesh_index: np.ndarray | None = None
    skipped: int = 0


def _target(image, size) -> np.ndarray:
    if image is not None:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        return np.array(img, dtype=np.uint8, order="C", copy=True)
    if size is None:
        raise ValueError("give an image or a size (H, W)")
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return np.zeros((h, w, 3), dtype=np.uint8)


def _cull(cull: str) -> int:
    if cull not in _CULL:
        raise ValueError(f"cull must be one of {sorted(_CULL)}, got {cull!r}")
    return _CULL[cull]


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def render_meshes(
    meshes: Sequence[Mesh],
    image: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    light: Light | None = None,
    alpha: float = 1.0,
    *,
    cull: str = "none",
    threads: int = 1,
    debug: bool = False,
) -> RenderResult:
    """Draw several meshes into one image (shared z-buffer); returns a :class:`RenderResult`.

    `image` (copied, not modified) is the background; else a black image of `size`.
    `threads` splits the image rows; `debug` adds coverage / triangle / mesh index maps.
    """
    img = _target(image, size)
    h, w = img.shape[:2]
    depth = np.empty((h, w), dtype=np.float32)
    mask = np.empty((h, w), dtype=np.uint8)
    cov = np.zeros((h, w), dtype=np.int32) if debug else None
    tri = np.empty((h, w), dtype=np.int32) if debug else None
    mid = np.empty((h, w), dtype=np.int32) if debug else None
    packed = [m._packed() for m in meshes]
    lp = light._packed() if light is not None else None
    skipped = _sim3dr.render(
        packed,
        img,
        depth,
        mask,
        lp,
        _check_alpha(alpha),
        _cull(cull),
        max(1, int(threads)),
        cov,
        tri,
        mid,
    )
    return RenderResult(img, depth, mask.view(bool), cov, tri, mid, int(skipped))


def render_full(
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None = None,
    image: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    light: Light | None = None,
    alpha: float = 1.0,
    *,
    normals: np.ndarray | None = None,
    cull: str = "none",
    threads: int = 1,
    debug: bool = False,
) -> RenderResult:
    """Render one mesh; returns image, depth (``-inf`` where empty) and mask.

    Args:
        vertices: ``(V, 3)`` image coordinates (x right, y down, z larger = nearer).
        triangles: ``(F, 3)`` int vertex indices.
        colors: ``(V, 3)`` in [0, 1], or None for flat grey.
        image: ``(H, W, 3) uint8`` background (not modified), or None for black of `size`.
        light: None = unlit (pure vertex colours), or a :class:`Light`.
        alpha: opacity of the mesh over the image.
        normals: optional outward unit vertex normals in image axes.
        cull: ``"none"`` (both sides, default), ``"back"`` or ``"front"``.
    """
    return render_meshes(
        [Mesh(vertices, triangles, colors, normals)],
        image,
        size,
        light,
        alpha,
        cull=cull,
        threads=threads,
        debug=debug,
    )


def render(
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None = None,
    image: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    light: Light | None = None,
    alpha: float = 1.0,
    **kw,
) -> np.ndarray:
    """Like :func:`render_full`, returning only the ``(H, W, 3) uint8`` image."""
    return render_full(vertices, triangles, colors, image, size, light, alpha, **kw).image


def render_batch(
    batch: Sequence[Mesh | Sequence[Mesh]],
    images: Sequence[np.ndarray] | None = None,
    sizes: Sequence[tuple[int, int]] | tuple[int, int] | None = None,
    light: Light | Sequence[Light | None] | None = None,
    alpha: float | Sequence[float] = 1.0,
    *,
    cull: str = "none",
    threads: int | None = None,
    return_depth: bool = False,
) -> list[np.ndarray] | list[RenderResult]:
    """Render a batch of images, each with one or several meshes, over `threads` threads
    (default: all CPUs); the GIL is released while rendering.

    `batch[k]` is a :class:`Mesh` or a list of them; `images[k]` its background (copied) or
    `sizes` (one ``(H, W)`` for all, or one per image).  `light` and `alpha` may be one value
    or one per image.  Returns the images, or :class:`RenderResult` s with `return_depth`.
    """
    n = len(batch)
    if images is not None and len(images) != n:
        raise ValueError(f"{len(images)} images for {n} mesh lists")
    if sizes is not None and len(sizes) == 2 and np.isscalar(sizes[0]):
        sizes = [tuple(sizes)] * n
    targets = [
        _target(images[k] if images is not None else None, sizes[k] if sizes is not None else None)
        for k in range(n)
    ]
    lights = list(light) if isinstance(light, list | tuple) else [light] * n
    alphas = list(alpha) if isinstance(alpha, list | tuple) else [alpha] * n
    if len(lights) != n or len(alphas) != n:
        raise ValueError("light and alpha need one value or one per image")
    per_image = [[m._packed() for m in ([b] if isinstance(b, Mesh) else b)] for b in batch]
    depths = [np.empty(t.shape[:2], np.float32) if return_depth else None for t in targets]
    masks = [np.empty(t.shape[:2], np.uint8) if return_depth else None for t in targets]
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    _sim3dr.render_batch(
        per_image,
        targets,
        depths,
        masks,
        [lt._packed() if lt is not None else None for lt in lights],
        [_check_alpha(a) for a in alphas],
        _cull(cull),
        max(1, int(threads)),
    )
    if return_depth:
        return [
            RenderResult(t, d, m.view(bool)) for t, d, m in zip(targets, depths, masks, strict=True)
        ]
    return targets


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3) float32`` of a mesh whose triangles are
    counter-clockwise seen from outside, in a right-handed frame (model coordinates):
    ``normalise(sum over faces of cross(v1 - v0, v2 - v0))``; zero for unused vertices.
    For image coordinates (left-handed: y down) negate them (the renderer does this)."""
    return _sim3dr.vertex_normals(vertices, triangles, 1.0)


def fit_to_image(
    vertices: np.ndarray,
    size: int | tuple[int, int] = 512,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    fill: float = 0.85,
) -> np.ndarray:
    """Model-coordinate vertices ``(V, 3)`` (x left-to-right of the viewer, y up, z towards
    the camera) -> image coordinates ``(V, 3)`` float32: rotated by the Euler angles
    (radians, :func:`vox3d.params.euler_to_rotation`), scaled so the mesh spans `fill` of
    the image and centred; y flipped, z shifted to min 0 (larger = nearer)."""
    h, w = (size, size) if np.isscalar(size) else size
    v = np.asarray(vertices, dtype=np.float64) @ euler_to_rotation(yaw, pitch, roll).T
    lo, hi = v.min(axis=0), v.max(axis=0)
    s = fill * min(w / max(hi[0] - lo[0], 1e-12), h / max(hi[1] - lo[1], 1e-12))
    c = (lo + hi) / 2
    out = np.empty_like(v)
    out[:, 0] = (v[:, 0] - c[0]) * s + w / 2
    out[:, 1] = -(v[:, 1] - c[1]) * s + h / 2
    out[:, 2] = (v[:, 2] - lo[2]) * s
    return out.astype(np.float32)


def render_shape(
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None = None,
    size: int | tuple[int, int] = 512,
    yaw: float = 0.0,
    pitch: float = 0.0,
    light: Light | None = None,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """A lit (Phong by default) render of a model-coordinate mesh fitted into the image,
    for figures: see :func:`fit_to_image`."""
    if image is not None:
        size = image.shape[:2]
    hw = (size, size) if np.isscalar(size) else tuple(size)
    iv = fit_to_image(vertices, hw, yaw, pitch)
    return render(
        iv,
        triangles,
        colors,
        image=image,
        size=None if image is not None else hw,
        light=light if light is not None else Light.phong(),
    )
