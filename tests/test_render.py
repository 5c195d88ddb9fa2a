"""Sim3DR (via vox3d.face.render) against the independent numpy reference, plus fill-rule,
culling, clipping, robustness, multi-mesh, batch and threading properties."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from render_reference import reference_normals, reference_render

from vox3d.face.render import (
    Light,
    Mesh,
    fit_to_image,
    render,
    render_batch,
    render_full,
    render_meshes,
    render_shape,
    vertex_normals,
)
from vox3d.paths import ICT_FACEKIT

H = W = 64


def random_soup(rng, n_tri=120, size=64, margin=8.0):
    """Random triangles (some partly off-screen) with random z and colours."""
    V = 3 * n_tri
    v = np.empty((V, 3), np.float32)
    centers = rng.uniform(-margin, size + margin, (n_tri, 2))
    scale = rng.uniform(2, 18, n_tri)
    for t in range(n_tri):
        v[3 * t : 3 * t + 3, :2] = centers[t] + rng.normal(0, 1, (3, 2)) * scale[t]
        v[3 * t : 3 * t + 3, 2] = rng.uniform(0, 50) + rng.normal(0, 3, 3)
    tri = np.arange(V, dtype=np.int32).reshape(-1, 3)
    col = rng.uniform(0, 1, (V, 3)).astype(np.float32)
    return v, tri, col


def grid_mesh(n=24, size=64, pad=3.0, jitter=0.35, seed=0, z_wave=True):
    """A jittered (n+1)x(n+1) grid covering [-pad, size+pad]^2, split into triangles with
    alternating diagonals; z varies smoothly."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-pad, size + pad, n + 1)
    X, Y = np.meshgrid(xs, xs)
    step = xs[1] - xs[0]
    J = rng.uniform(-jitter, jitter, (2, n + 1, n + 1)) * step
    J[:, [0, -1], :] = 0
    J[:, :, [0, -1]] = 0
    X, Y = X + J[0], Y + J[1]
    Z = 10 + (3 * np.sin(X / 9) * np.cos(Y / 7) if z_wave else 0 * X)
    v = np.stack([X, Y, Z], -1).reshape(-1, 3).astype(np.float32)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    tris = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = idx[i, j], idx[i, j + 1], idx[i + 1, j + 1], idx[i + 1, j]
            if (i + j) % 2:
                tris += [(a, c, b), (a, d, c)]
            else:
                tris += [(a, d, b), (b, d, c)]
    return v, np.array(tris, np.int32)


def _agree(ours, ref_img, ref_depth, mask):
    covered = np.isfinite(ref_depth)
    assert (mask == covered).mean() >= 0.995
    both = covered & mask
    diff = np.abs(ours.image.astype(int) - ref_img.astype(int)).max(-1)
    assert (diff[both] <= 1).mean() >= 0.995, f"colour agreement {(diff[both] <= 1).mean():.4f}"
    dz = np.abs(ours.depth[both].astype(np.float64) - ref_depth[both])
    assert (dz <= 1e-4).mean() >= 0.995, f"depth agreement {(dz <= 1e-4).mean():.4f}"
    return both.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_triangles_match_reference_unlit(seed):
    rng = np.random.default_rng(seed)
    v, t, c = random_soup(rng)
    ours = render_full(v, t, c, size=(H, W))
    ref_img, ref_depth, _ = reference_render([(v, t, c)], H, W)
    n = _agree(ours, ref_img, ref_depth, ours.mask)
    assert n > 0.5 * H * W  # the test exercises a well-covered image
    assert np.all(np.isneginf(ours.depth[~ours.mask]))
    assert np.all(ours.image[~ours.mask] == 0)


def test_lit_overlay_matches_reference():
    rng = np.random.default_rng(3)
    v, t = grid_mesh(n=16)
    c = rng.uniform(0.2, 1, v.shape).astype(np.float32)
    bg = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    light = Light(
        ambient=(0.2, 0.25, 0.3),
        directional=[((0.4, -0.3, 1.0), (0.6, 0.6, 0.5)), ((-1, 0.2, 0.5), (0.3, 0.2, 0.2))],
        specular=0.4,
        shininess=12.0,
    )
    ours = render_full(v, t, c, image=bg, light=light, alpha=0.7)
    ref_light = (light.ambient, light.directional, light.specular, light.shininess)
    ref_img, ref_depth, _ = reference_render([(v, t, c)], H, W, bg, ref_light, alpha=0.7)
    _agree(ours, ref_img, ref_depth, ours.mask)
    # the lighting really varies and the overlay really blends
    assert ours.image[ours.mask].std() > 5
    assert not np.array_equal(ours.image, render(v, t, c, size=(H, W), light=light))


def test_gouraud_matches_reference_and_differs_from_phong():
    rng = np.random.default_rng(9)
    v, t = grid_mesh(n=12, seed=4)
    v[:, 2] = 10 + 25 * np.sin(v[:, 0] / 12) * np.cos(v[:, 1] / 15)  # strong curvature
    c = rng.uniform(0.3, 1, v.shape).astype(np.float32)
    light = Light.phong(specular=0.5, shininess=8.0, shading="gouraud")
    ours = render_full(v, t, c, size=(H, W), light=light)
    ref_light = (light.ambient, light.directional, light.specular, light.shininess, "gouraud")
    ref_img, ref_depth, _ = reference_render([(v, t, c)], H, W, light=ref_light)
    _agree(ours, ref_img, ref_depth, ours.mask)
    phong = render(v, t, c, size=(H, W), light=Light.phong(specular=0.5, shininess=8.0))
    assert np.abs(phong.astype(int) - ours.image).max() > 10
    with pytest.raises(ValueError):
        render(v, t, size=(H, W), light=Light(shading="flat"))


def test_background_untouched_outside_mask_and_input_not_modified():
    rng = np.random.default_rng(4)
    v, t, c = random_soup(rng, n_tri=10)
    bg = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    bg0 = bg.copy()
    r = render_full(v, t, c, image=bg)
    assert np.array_equal(bg, bg0)
    assert np.array_equal(r.image[~r.mask], bg[~r.mask])


def test_tessellated_plane_no_cracks_no_double_writes():
    for seed in range(3):
        v, t = grid_mesh(n=40, seed=seed, jitter=0.3)
        a, b, c = v[t[:, 0], :2], v[t[:, 1], :2], v[t[:, 2], :2]
        cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
        assert (cross < 0).all() or (cross > 0).all()  # no fold-overs: a true tessellation
        r = render_full(v, t, size=(H, W), debug=True)
        assert r.mask.all(), f"{(~r.mask).sum()} uncovered pixels"
        assert (r.coverage == 1).all(), f"max coverage {r.coverage.max()}"


def test_fan_through_pixel_centres_covered_once():
    # a fan of thin triangles around a vertex placed exactly on a pixel centre, with edges
    # through other pixel centres: the top-left rule must assign each centre exactly once
    c = np.array([32.5, 32.5, 0])
    angles = np.linspace(0, 2 * np.pi, 25)[:-1]
    ring = np.stack([c[0] + 40 * np.cos(angles), c[1] + 40 * np.sin(angles), 0 * angles], 1)
    ring = np.round(ring * 2) / 2  # on half-pixel positions: edges through many centres
    v = np.vstack([c, ring]).astype(np.float32)
    n = len(ring)
    t = np.array([(0, 1 + k, 1 + (k + 1) % n) for k in range(n)], np.int32)
    r = render_full(v, t, size=(H, W), debug=True)
    _, _, ref_cov = reference_render([(v, t, None)], H, W)
    inner = np.zeros((H, W), bool)
    inner[8:56, 8:56] = True
    assert (r.coverage[inner] == 1).all()
    assert np.array_equal(r.coverage, ref_cov)


def test_backface_culling_and_two_sided():
    # front face: counter-clockwise in a y-up view = clockwise in the y-down pixel grid
    v = np.array([[10, 50, 1], [50, 50, 1], [30, 10, 1]], np.float32)  # CCW seen y-up
    front = np.array([[0, 1, 2]], np.int32)
    back = front[:, [0, 2, 1]]
    for tri, is_front in ((front, True), (back, False)):
        both = render_full(v, tri, size=(H, W))
        cb = render_full(v, tri, size=(H, W), cull="back")
        cf = render_full(v, tri, size=(H, W), cull="front")
        assert both.mask.sum() > 500
        assert cb.mask.any() == is_front
        assert cf.mask.any() == (not is_front)
    # two-sided lighting: the back face is lit like the front face (normals flipped)
    light = Light(ambient=(0, 0, 0), directional=[((0, 0, 1), (1, 1, 1))])
    a = render(v, front, size=(H, W), light=light)
    b = render(v, back, size=(H, W), light=light)
    assert np.array_equal(a, b) and a.max() > 150


def test_offscreen_and_huge_triangles():
    v = np.array(
        [
            [-100, -100, 0], [-50, -100, 0], [-80, -40, 0],       # fully off-screen
            [-1e4, -1e4, 1], [1e4, -1e4, 1], [0, 1e4, 1],         # covers everything
            [-1e7, 0, 2], [1e7, 0, 2], [0, 1e7, 2],                # beyond 2^20 px: skipped
        ],
        np.float32,
    )  # fmt: skip
    t = np.arange(9, dtype=np.int32).reshape(3, 3)
    r = render_full(v, t, size=(H, W), debug=True)
    assert r.mask.all() and (r.coverage == 1).all()
    assert np.allclose(r.depth, 1.0)
    assert r.skipped == 1
    ref_img, ref_depth, _ = reference_render([(v, t, None)], H, W)
    assert np.array_equal(ref_img, r.image) and np.allclose(ref_depth, r.depth)


def test_degenerate_nan_and_bad_indices_are_skipped():
    v = np.array(
        [[5, 5, 0], [40, 5, 0], [5, 40, 0], [np.nan, 3, 0], [20, 20, np.inf],
         [10, 10, 0], [20, 20, 0], [30, 30, 0]],
        np.float32,
    )  # fmt: skip
    t = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 4], [5, 6, 7], [0, 1, 99], [0, -1, 2]], np.int32)
    r = render_full(v, t, size=(H, W), light=Light())
    ref_img, ref_depth, _ = reference_render([(v, t, None)], H, W)
    assert r.skipped == 4  # NaN, inf, index 99, index -1 (the collinear one is just empty)
    assert np.array_equal(r.mask, np.isfinite(ref_depth))
    assert r.mask.sum() > 400
    # all-NaN input: nothing drawn, no crash
    r = render_full(np.full((3, 3), np.nan, np.float32), t[:1], size=(H, W))
    assert not r.mask.any()
    r = render_full(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), size=(8, 8))
    assert not r.mask.any()


def test_depth_test_and_several_meshes():
    v1, t1 = grid_mesh(n=8, seed=1, z_wave=False)  # z = 10
    v2 = v1.copy()
    v2[:, 2] = 5 + 10 * (v2[:, 0] / W)  # a slope crossing z = 10 at x = W / 2
    red, blue = np.array([1, 0, 0], np.float32), np.array([0, 0, 1], np.float32)
    c1 = np.tile(red, (len(v1), 1))
    c2 = np.tile(blue, (len(v2), 1))
    r = render_meshes([Mesh(v1, t1, c1), Mesh(v2, t1, c2)], size=(H, W), debug=True)
    ref_img, ref_depth, _ = reference_render([(v1, t1, c1), (v2, t1, c2)], H, W)
    assert (np.abs(r.image.astype(int) - ref_img).max(-1) <= 1).mean() >= 0.995
    assert (r.image[:, : W // 2 - 2, 0] == 255).all()  # plane 1 in front on the left
    assert (r.image[:, W // 2 + 2 :, 2] == 255).all()  # slope in front on the right
    assert set(np.unique(r.mesh_index)) == {0, 1}


def test_batch_threads_and_gil_release_give_identical_images():
    rng = np.random.default_rng(6)
    scenes = [random_soup(rng, n_tri=40) for _ in range(6)]
    light = Light.phong()
    singles = [render(v, t, c, size=(H, W), light=light) for v, t, c in scenes]
    batch = render_batch(
        [Mesh(v, t, c) for v, t, c in scenes], sizes=(H, W), light=light, threads=2
    )
    assert all(np.array_equal(a, b) for a, b in zip(singles, batch, strict=True))
    for v, t, c in scenes[:2]:
        assert np.array_equal(
            render(v, t, c, size=(H, W), light=light, threads=1),
            render(v, t, c, size=(H, W), light=light, threads=3),
        )
    # renders from Python threads (GIL released in the kernel) are correct too
    out = [None] * len(scenes)

    def job(k):
        v, t, c = scenes[k]
        out[k] = render(v, t, c, size=(H, W), light=light)

    ths = [threading.Thread(target=job, args=(k,)) for k in range(len(scenes))]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert all(np.array_equal(a, b) for a, b in zip(singles, out, strict=True))


def test_batch_several_meshes_per_image_and_depth():
    v, t = grid_mesh(n=6, seed=2, z_wave=False)
    small = v.copy()
    small[:, :2] = small[:, :2] * 0.25 + 20
    small[:, 2] = 20
    res = render_batch(
        [[Mesh(v, t), Mesh(small, t, color=(1, 0, 0))], Mesh(small, t)],
        sizes=[(H, W), (32, 48)],
        threads=2,
        return_depth=True,
    )
    assert res[0].image.shape == (H, W, 3) and res[1].image.shape == (32, 48, 3)
    assert res[0].mask.all()
    assert np.isclose(res[0].depth[30, 30], 20) and np.isclose(res[0].depth[2, 2], 10)
    assert tuple(res[0].image[30, 30]) == (255, 0, 0)


def test_vertex_normals_match_reference_and_point_outwards():
    # a unit sphere (model coordinates, right handed, CCW from outside)
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2)
    n = vertex_normals(s.vertices.astype(np.float32), s.faces.astype(np.int32))
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
    assert (np.einsum("ij,ij->i", n, s.vertices) > 0.95).all()
    ref = -reference_normals(s.vertices, s.faces)
    assert np.allclose(n, ref, atol=1e-5)


def test_bad_arguments_raise():
    v = np.zeros((3, 3), np.float32)
    t = np.array([[0, 1, 2]], np.int32)
    with pytest.raises(ValueError):
        render(v, t)  # no image, no size
    with pytest.raises(ValueError):
        render(v, t, size=(8, 8), alpha=2)
    with pytest.raises(ValueError):
        render(v, t, size=(8, 8), cull="sideways")
    with pytest.raises(ValueError):
        render(v[:, :2], t, size=(8, 8))
    with pytest.raises(ValueError):
        render(v, t, np.zeros((2, 3)), size=(8, 8))


@pytest.mark.shared_data(ICT_FACEKIT)
def test_ict_face_matches_reference_lit():
    from vox3d import params as P
    from vox3d.face.face_model import load_face_model

    m = load_face_model("ict", subset="narrow_face")
    pose = P.srt_to_pose(2.6 * 120 / 64, P.euler_to_rotation(0.4, 0.1, 0.05), [60, 65, 0])
    iv = P.to_image(P.transform_vertices(m.mean, pose), [0, 0, H, W])
    cols = ((m.mean - m.mean.min(0)) / np.ptp(m.mean, axis=0)).astype(np.float32)
    light = Light.phong()
    ours = render_full(iv, m.triangles, cols, size=(H, W), light=light)
    ref = reference_render(
        [(iv, m.triangles, cols)],
        H,
        W,
        light=(light.ambient, light.directional, light.specular, light.shininess),
    )
    assert _agree(ours, ref[0], ref[1], ours.mask) > 1000


def test_render_shape_fits_mesh_into_image():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3)
    img = render_shape(s.vertices, s.faces.astype(np.int32), size=(80, 100))
    assert img.shape == (80, 100, 3)
    covered = img.max(-1) > 0
    ys, xs = np.nonzero(covered)
    # a sphere filling 85% of the smaller side, centred
    assert abs(np.ptp(ys) + 1 - 0.85 * 80) <= 2 and abs(xs.mean() - 49.5) < 1
    # lit from the upper left (towards the viewer): upper-left brighter than lower-right
    assert img[25, 40].mean() > img[55, 60].mean()
    v = fit_to_image(s.vertices, 64)
    assert v[:, 2].min() == 0 and v[np.argmax(s.vertices[:, 2]), 2] == v[:, 2].max()


def test_results_do_not_depend_on_earlier_calls_and_odd_sizes_match_reference():
    # the kernel reuses per-thread scratch buffers: renders of different sizes in any order
    # must equal each other, and non-square images must match the reference
    rng = np.random.default_rng(8)
    sizes = [(64, 64), (32, 100), (100, 32), (64, 64), (200, 50), (10, 10), (64, 64)]
    scenes = []
    for h, w in sizes:
        n = 30
        v = np.c_[
            rng.uniform(-5, w + 5, 3 * n), rng.uniform(-5, h + 5, 3 * n), rng.uniform(0, 9, 3 * n)
        ].astype(np.float32)
        scenes.append((v, np.arange(3 * n, dtype=np.int32).reshape(-1, 3), (h, w)))
    first = [render_full(v, t, size=s) for v, t, s in scenes]
    again = [render_full(v, t, size=s) for v, t, s in scenes[::-1]][::-1]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
        assert np.array_equal(a.mask, b.mask)
    v, t, (h, w) = scenes[1]
    ref_img, ref_depth, _ = reference_render([(v, t, None)], h, w)
    _agree(first[1], ref_img, ref_depth, first[1].mask)
