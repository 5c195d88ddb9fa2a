"""An independent, slow, pure-numpy reference rasterizer for testing Sim3DR.

It states the rendering rules of :mod:`vox3d.face.render` in a different form from the C++
kernel, triangle by triangle over each bounding box:

* vertices snapped to 1/256 pixel (``floor(256 x + 0.5)``), pixel centres at +0.5;
* coverage: the pixel centre is strictly inside, or exactly on a *top* edge (horizontal,
  with the triangle below it in the y-down grid) or a *left* edge (non-horizontal, with
  the triangle to its right);
* barycentric coordinates from a 2x2 linear solve; depth = barycentric mix of z; the
  larger z wins, ties keep the earlier triangle;
* shading as documented in :mod:`vox3d.face.render` (per-pixel normalised normal, or per-vertex
  lighting for Gouraud; ambient + Lambert + Phong with viewer (0, 0, 1), two-sided),
  rounding half up.

Only for small images (tests use 64x64).
"""

from __future__ import annotations

import numpy as np

SUB = 256


def _snap(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) * SUB + 0.5).astype(np.int64)


def reference_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Outward unit normals in image axes (y down): minus the right-handed face-normal sum."""
    v = vertices.astype(np.float64)
    acc = np.zeros_like(v)
    for tri in triangles:
        if np.any(tri < 0) or np.any(tri >= len(v)):
            continue
        a, b, c = v[tri]
        with np.errstate(invalid="ignore"):
            n = np.cross(b - a, c - a)
        if not np.all(np.isfinite(n)):
            continue
        for i in tri:
            acc[i] += n
    ln = np.linalg.norm(acc, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ln > 0, -acc / ln, 0.0)
    return out


def _on_top_or_left(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> bool:
    """Is edge p-q a top or left edge of triangle (p, q, r)?  Integer coordinates."""
    if p[1] == q[1]:  # horizontal: top when the third vertex lies below (larger y)
        return r[1] > p[1]
    # non-horizontal: left when the third vertex lies to the right of the edge's line
    # x on the line at height r_y: p_x + (r_y - p_y) (q_x - p_x) / (q_y - p_y)
    num = (r[1] - p[1]) * (q[0] - p[0])
    den = q[1] - p[1]
    # r_x > p_x + num / den  <=>  (r_x - p_x) * den > num  (den > 0), reversed if den < 0
    lhs = (r[0] - p[0]) * den
    return lhs > num if den > 0 else lhs < num


def reference_render(
    meshes,
    height: int,
    width: int,
    background: np.ndarray | None = None,
    light=None,
    alpha: float = 1.0,
    cull: str = "none",
):
    """Render ``meshes`` (list of (vertices, triangles, colors or None)) like Sim3DR.

    `light` is None or ``(ambient (3,), [(direction, color), ...], specular, shininess
    [, "phong" | "gouraud"])``.
    Returns ``image (H, W, 3) uint8, depth (H, W) float64 (-inf empty), coverage (H, W)``.
    """
    depth = np.full((height, width), -np.inf)
    owner = np.full((height, width, 2), -1, dtype=np.int64)
    bary = np.zeros((height, width, 3))
    coverage = np.zeros((height, width), dtype=np.int64)
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    cx = jj * SUB + SUB // 2
    cy = ii * SUB + SUB // 2
    for mi, (verts, tris, _cols) in enumerate(meshes):
        verts = np.asarray(verts, dtype=np.float32)
        for ti, tri in enumerate(np.asarray(tris)):
            if np.any(tri < 0) or np.any(tri >= len(verts)):
                continue
            v = verts[tri]
            if not np.all(np.isfinite(v)) or np.any(np.abs(v[:, :2]) > 2.0**20):
                continue
            P = np.stack([_snap(v[:, 0]), _snap(v[:, 1])], axis=1)  # (3, 2) int
            d1, d2 = P[1] - P[0], P[2] - P[0]
            area = int(d1[0] * d2[1] - d1[1] * d2[0])
            if area == 0:
                continue
            back = area > 0  # y-down grid: front faces have negative area
            if (cull == "back" and back) or (cull == "front" and not back):
                continue
            x0 = max(0, int(np.ceil((P[:, 0].min() - SUB // 2) / SUB)))
            x1 = min(width - 1, int(np.floor((P[:, 0].max() - SUB // 2) / SUB)))
            y0 = max(0, int(np.ceil((P[:, 1].min() - SUB // 2) / SUB)))
            y1 = min(height - 1, int(np.floor((P[:, 1].max() - SUB // 2) / SUB)))
            if x0 > x1 or y0 > y1:
                continue
            px = cx[y0 : y1 + 1, x0 : x1 + 1]
            py = cy[y0 : y1 + 1, x0 : x1 + 1]
            inside = np.ones(px.shape, dtype=bool)
            s = 1 if area > 0 else -1
            for k in range(3):
                p, q, r = P[k], P[(k + 1) % 3], P[(k + 2) % 3]
                # side of pixel centre relative to p->q, signed so that inside > 0
                e = s * ((q[0] - p[0]) * (py - p[1]) - (q[1] - p[1]) * (px - p[0]))
                tl = _on_top_or_left(p, q, r)
                inside &= (e > 0) | ((e == 0) & tl)
            if not inside.any():
                continue
            # barycentrics by a 2x2 solve on the snapped coordinates
            M = np.array([[d1[0], d2[0]], [d1[1], d2[1]]], dtype=np.float64)
            rhs = np.stack([px - P[0, 0], py - P[0, 1]]).reshape(2, -1).astype(np.float64)
            uv = np.linalg.solve(M, rhs).reshape(2, *px.shape)
            b = np.stack([1 - uv[0] - uv[1], uv[0], uv[1]], axis=-1)
            z = (b * v[:, 2].astype(np.float64)).sum(-1)
            zf = z.astype(np.float32).astype(np.float64)
            sub_d = depth[y0 : y1 + 1, x0 : x1 + 1]
            coverage[y0 : y1 + 1, x0 : x1 + 1] += inside
            win = inside & (zf > sub_d)
            sub_d[win] = zf[win]
            owner[y0 : y1 + 1, x0 : x1 + 1][win] = (mi, ti)
            bary[y0 : y1 + 1, x0 : x1 + 1][win] = b[win]
    img = (
        np.zeros((height, width, 3), np.uint8)
        if background is None
        else np.array(background, dtype=np.uint8)
    )
    normals = [reference_normals(np.asarray(m[0]), np.asarray(m[1])) for m in meshes]
    gouraud = light is not None and len(light) > 4 and light[4] == "gouraud"

    def shade(c, n):
        ambient, dirs, ks, shin = light[:4]
        shade = np.array(ambient, np.float64)
        spec = np.zeros(3)
        for d, col in dirs:
            L = np.asarray(d, np.float64) / np.linalg.norm(d)
            L = L.astype(np.float32).astype(np.float64)
            col = np.asarray(col, np.float64)
            nl = n @ L
            if nl <= 0:
                continue
            shade = shade + col * nl
            if ks > 0:
                rv = (2 * nl * n - L)[2]
                if rv > 0:
                    spec = spec + col * ks * rv**shin
        return c * shade + spec

    for i, j in zip(*np.nonzero(owner[..., 0] >= 0), strict=True):
        mi, ti = owner[i, j]
        verts, tris, cols = meshes[mi]
        tri = np.asarray(tris)[ti]
        b = bary[i, j]
        vc = np.asarray(cols, np.float64)[tri] if cols is not None else np.full((3, 3), 0.75)
        c = b @ vc
        if light is not None:
            v = np.asarray(verts, np.float64)[tri]
            d1, d2 = _snap(v[1, :2]) - _snap(v[0, :2]), _snap(v[2, :2]) - _snap(v[0, :2])
            sign = -1 if d1[0] * d2[1] - d1[1] * d2[0] > 0 else 1  # back faces: flip normals
            if gouraud:  # light each vertex (clipped), then interpolate
                lit = [np.clip(shade(vc[k], sign * normals[mi][tri[k]]), 0, 1) for k in range(3)]
                c = b @ np.array(lit)
            else:
                n = b @ normals[mi][tri]
                ln = np.linalg.norm(n)
                if ln > 0:
                    n = n / ln * sign
                c = shade(c, n)
        val = np.clip(c, 0, 1) * 255
        if alpha < 1:
            val = alpha * val + (1 - alpha) * img[i, j]
        img[i, j] = np.clip(np.floor(val + 0.5), 0, 255).astype(np.uint8)
    return img, depth, coverage
