"""Face models: the real ICT-FaceKit (cached parse), a tiny synthetic FaceXModel folder for the
parser / cache logic, and a BFM fixture with the real bfm_noneck_v3 shapes and tri.pkl."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from vox3d import params as P
from vox3d.face import are_pairs, bfm, ict_facekit
from vox3d.face import face_model as fm
from vox3d.paths import BFM_TRI, ICT_FACEKIT, PARAM_MEAN_STD
from vox3d.safeload import BadModelFileError, UnsafeFileError, load_pickle

needs_ict = pytest.mark.shared_data(ICT_FACEKIT)


@pytest.fixture(scope="module")
def ict_head():
    return fm.load_face_model("ict", subset="head", n_id=100, n_exp=53)


# ---------------------------------------------------------------------------------------
# ICT-FaceKit (real data)
# ---------------------------------------------------------------------------------------


@needs_ict
def test_ict_topology_units_and_orientation(ict_head):
    m = ict_head
    assert m.mean.shape == (26719, 3) and m.mean.dtype == np.float32
    assert (
        m.triangles.shape == (52220, 3) and m.triangles.dtype == np.int32
    )  # 548 tris + 25836 quads
    assert m.id_basis.shape == (100, 26719, 3) and m.exp_basis.shape == (53, 26719, 3)
    assert m.units == "cm"
    width = m.mean[:, 0].max() - m.mean[:, 0].min()
    assert 20 < width < 30  # a head about 25 cm wide: centimetres
    lm = m.mean[m.landmarks68]
    # symmetric outer eye corners; x towards the subject's left; nose tip in front (+z)
    assert np.isclose(lm[36, 0], -lm[45, 0], atol=1e-4) and lm[45, 0] > 0
    assert lm[30, 2] > lm[36, 2] and lm[8, 1] < lm[30, 1] < lm[27, 1]
    # triangles counter-clockwise from outside: face normals point away from the centre,
    # and the normal at the nose tip points forwards
    from vox3d.face.render import vertex_normals

    n = vertex_normals(m.mean, m.triangles)
    assert n[m.landmarks68[30], 2] > 0.8
    skin = m.subset("face_neck")
    ns = vertex_normals(skin.mean, skin.triangles)
    outward = np.einsum("ij,ij->i", ns, skin.mean - skin.mean.mean(0))
    assert (outward > 0).mean() > 0.8  # (ears, nostrils and eye sockets fold inwards)


@needs_ict
def test_ict_modes_scale_and_expressions(ict_head):
    m = ict_head
    norms = np.linalg.norm(m.id_basis.reshape(100, -1), axis=1)
    # PCA modes stored at one standard deviation: norms fall like sqrt(eigenvalues)
    assert norms[0] > 3 * norms[20] > 0 and np.all(np.diff(norms[::10]) < 0)
    assert np.allclose(m.id_std, 1)
    assert m.exp_names[:10] == list(ict_facekit.ICT_DEFAULT_EXPRESSIONS)
    assert sorted(m.exp_names) == sorted(set(m.exp_names)) and len(m.exp_names) == 53
    jaw = m.exp_names.index("jawOpen")
    e = np.zeros(53, np.float32)
    e[jaw] = 1
    v = m.vertices(np.zeros(100), e)
    chin = m.landmarks68[8]
    assert v[chin, 1] < m.mean[chin, 1] - 1.0  # the chin drops by more than a centimetre
    blink = m.exp_names.index("eyeBlink_L")
    # eyeBlink_L closes the subject's left eye (landmarks 43/44 upper lid, x > 0)
    e = np.zeros(53, np.float32)
    e[blink] = 1
    v = m.vertices(np.zeros(100), e)
    upper_left = m.landmarks68[[43, 44]]
    upper_right = m.landmarks68[[37, 38]]
    assert (v[upper_left, 1] < m.mean[upper_left, 1] - 0.2).all()
    assert np.allclose(v[upper_right], m.mean[upper_right], atol=0.05)


@needs_ict
def test_ict_default_load_and_named_expressions():
    m = fm.load_face_model("ict")
    assert m.subset_name == "face" and m.n_vertices == 9409
    assert m.n_id == 40 and m.n_exp == 10 and m.id_basis.shape == (40, 9409, 3)
    m2 = fm.load_face_model("ict", exp_names=["mouthPucker", "jawOpen"], n_id=5)
    assert m2.exp_names == ["mouthPucker", "jawOpen"] and m2.n_id == 5
    assert np.array_equal(m2.exp_basis[1], m.exp_basis[0])  # jawOpen is first by default
    with pytest.raises(ValueError, match="unknown ICT expressions"):
        fm.load_face_model("ict", exp_names=["smirk"])
    with pytest.raises(ValueError):
        fm.load_face_model("ict", n_id=101)


@needs_ict
def test_ict_subsets_are_consistent(ict_head):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 100)).astype(np.float32)
    e = rng.uniform(0, 1, size=(2, 53)).astype(np.float32)
    full = ict_head.vertices(a, e)
    for name, nv in (("face_neck", 11248), ("face", 9409), ("narrow_face", 6706)):
        s = ict_head.subset(name)
        assert s.n_vertices == nv and s.subset_name == name
        assert s.triangles.min() >= 0 and s.triangles.max() < nv
        assert np.allclose(s.vertices(a, e), full[:, :nv], atol=1e-4)
        assert np.array_equal(s.landmarks68, ict_head.landmarks68)
        assert s.are_pairs == ict_head.are_pairs
        assert np.array_equal(s.vertex_index, np.arange(nv))
    face = ict_head.subset("face")
    assert face.subset("narrow_face").n_vertices == 6706
    assert face.subset("face").n_vertices == 9409
    with pytest.raises(ValueError, match="cannot take subset"):
        face.subset("head")
    assert len(face.triangles) < len(ict_head.subset("face_neck").triangles) < 52220
    with pytest.raises(ValueError):
        ict_head.subset("torso")
    assert "eyes" in ict_head.vertex_sets and "mouth" in ict_head.vertex_sets
    assert "eyes" not in face.vertex_sets  # eyeballs lie outside the face area


@needs_ict
def test_vertices_numpy_torch_and_batching(ict_head):
    import torch

    m = ict_head.subset("face")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 100)).astype(np.float32)
    e = rng.uniform(0, 1, (3, 53)).astype(np.float32)
    vn = m.vertices(a, e)
    vt = m.vertices_torch(torch.from_numpy(a), torch.from_numpy(e))
    assert vn.shape == (3, 9409, 3) and vt.shape == (3, 9409, 3)
    assert np.allclose(vn, vt.numpy(), atol=1e-4)
    manual = (
        m.mean
        + np.einsum("k,kvc->vc", a[1], m.id_basis)
        + np.einsum("k,kvc->vc", e[1], m.exp_basis)
    )
    assert np.allclose(vn[1], manual, atol=1e-4)
    assert np.allclose(m.vertices(a[1], e[1]), vn[1], atol=1e-4)  # 1-D input
    assert np.allclose(
        m.vertices(a[1, :10]),
        m.mean + np.einsum("k,kvc->vc", a[1, :10], m.id_basis[:10]),
        atol=1e-4,
    )
    x = torch.from_numpy(a).requires_grad_(True)
    m.vertices_torch(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        m.vertices(np.zeros(101))


@needs_ict
def test_ict_are_pairs_are_mirror_pairs_chosen_by_rule(ict_head):
    m = ict_head
    # the landmark rule reproduces the former pairs, kept as evaluate.are_pairs: landmark_rule
    rule = are_pairs.ICT_ARE_PAIRS_LANDMARK_RULE
    assert are_pairs.choose_are_pairs(m.mean, m.landmarks68, np.arange(6706)) == rule
    # the model's own pairs are the default (CMP's positions), no longer the rule's
    assert m.are_pairs == are_pairs.ICT_ARE_PAIRS and m.are_pairs != rule
    v = m.mean.astype(np.float64)
    d = {}
    for k, (r, left) in rule.items():
        assert v[r, 0] < 0 < v[left, 0]  # (subject's right, subject's left)
        assert np.allclose(v[r] * [-1, 1, 1], v[left], atol=1e-3)  # mirror images
        d[k] = np.linalg.norm(v[r] - v[left])
    assert d["oicd"] == pytest.approx(np.linalg.norm(v[m.landmarks68[36]] - v[m.landmarks68[45]]))
    assert d["oicd"] < d["forehead"] < d["cheek"] < d["mid"] < d["ear"]
    # the forehead pair lies above the eyebrows
    assert v[rule["forehead"][0], 1] > v[m.landmarks68[19], 1] + 1.0
    assert m.are_vertex_pairs().shape == (5, 2)


# ---------------------------------------------------------------------------------------
# OBJ parsing and the cache, on a tiny synthetic FaceXModel folder
# ---------------------------------------------------------------------------------------


def _obj(verts, faces_text: str) -> str:
    return "# test\n" + "".join(f"v {x} {y} {z}\n" for x, y, z in verts) + "vt 0 0\n" + faces_text


def write_tiny_facex(d, shift=0.0):
    """A cube-ish 8-vertex FaceXModel with quads, 2 identities, 2 expressions."""
    base = np.array(
        [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
         [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], float,
    )  # fmt: skip
    faces = (
        "f 1/1 4/1 3/1 2/1\nf 5/1 6/1 7/1 8/1\nf 1/1 2/1 6/1 5/1\n"
        "f 3/1 4/1 8/1 7/1\nf 2/1 3/1 7/1 6/1\nf -8/1 -4/1 -1/1\nf 4/1 1/1 8/1\n"
    )
    d.mkdir(parents=True, exist_ok=True)
    (d / "generic_neutral_mesh.obj").write_text(_obj(base, faces))
    for i in range(2):
        (d / f"identity{i:03d}.obj").write_text(_obj(base * (1 + 0.1 * (i + 1)) + shift, faces))
    names = ["jawOpen", "eyeBlink_L"]
    for j, n in enumerate(names):
        b = base.copy()
        b[j, 1] -= 0.5
        (d / f"{n}.obj").write_text(_obj(b, faces))
    (d / "vertex_indices.json").write_text(json.dumps({"expressions": names}))
    return base


def test_obj_parsing_splits_quads_keeping_winding(tmp_path):
    data = _obj(
        np.eye(3).tolist() + [[1, 1, 0]], "f 1/1/1 2/1/1 4/1/1 3/1/1\nf -4 -3 -2\n"
    ).encode()
    v = ict_facekit.parse_obj_vertices(data)
    t = ict_facekit.parse_obj_faces(data)
    assert v.shape == (4, 3)
    assert t.tolist() == [[0, 1, 3], [0, 3, 2], [0, 1, 2]]
    with pytest.raises(BadModelFileError):
        ict_facekit.parse_obj_vertices(b"f 1 2 3\n", "x.obj")
    with pytest.raises(BadModelFileError, match="bad.obj"):
        ict_facekit.parse_obj_vertices(b"v 1 2 zz\n", "bad.obj")


def test_ict_parse_and_cache_on_tiny_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VOX3D_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "FaceXModel"
    base = write_tiny_facex(src)
    a = ict_facekit.load_ict_arrays(src)
    assert a["triangles"].shape == (12, 3)  # 5 quads -> 10 + 2 triangles
    assert np.allclose(a["mean"], base)
    assert np.allclose(a["id_basis"][1], 0.2 * base, atol=1e-6)
    assert list(a["exp_names"]) == ["jawOpen", "eyeBlink_L"]
    assert np.isclose(a["exp_basis"][1][1, 1], -0.5)
    # outward orientation: every face normal points away from the cube centre
    v = a["mean"][a["triangles"]]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert (np.einsum("ij,ij->i", n, v.mean(1)) > 0).all()
    caches = list((tmp_path / "cache").glob("ict_facekit_*.npz"))
    assert len(caches) == 1
    b = ict_facekit.load_ict_arrays(src)  # from the cache: same arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # a change of the source changes the key: parsed again, a second cache file
    write_tiny_facex(src, shift=0.5)
    c = ict_facekit.load_ict_arrays(src)
    assert not np.allclose(c["id_basis"], a["id_basis"])
    assert len(list((tmp_path / "cache").glob("ict_facekit_*.npz"))) == 2
    # a corrupt cache is ignored and rewritten
    for f in (tmp_path / "cache").glob("*.npz"):
        f.write_bytes(b"garbage")
    d = ict_facekit.load_ict_arrays(src)
    assert np.array_equal(d["id_basis"], c["id_basis"])
    # no leftovers of atomic writes
    assert not list((tmp_path / "cache").glob("*.part"))


def test_ict_missing_or_broken_sources(tmp_path):
    with pytest.raises(BadModelFileError, match="not found"):
        ict_facekit.load_ict_arrays(tmp_path / "nope.tar.xz", use_cache=False)
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(BadModelFileError, match="bad.tar.xz"):
        ict_facekit.load_ict_arrays(bad, use_cache=False)
    d = tmp_path / "FaceXModel"
    write_tiny_facex(d)
    (d / "identity001.obj").write_text("v 0 0 0\n")
    with pytest.raises(BadModelFileError, match="identity001.obj"):
        ict_facekit.load_ict_arrays(d, use_cache=False)


# ---------------------------------------------------------------------------------------
# BFM (3DDFA-V2 bfm_noneck_v3.pkl format) with a face-shaped fixture on the real topology
# ---------------------------------------------------------------------------------------


def make_bfm_fixture_vertices(ict_face) -> tuple[np.ndarray, np.ndarray]:
    """Face-shaped vertices (um) for the real 38,365-vertex bfm_noneck_v3 topology.

    The real mesh is a disc with one hole (the mouth): its Tutte embedding (outer boundary
    on a circle) is rotated to put the hole below the centre, stretched over the ICT
    narrow face so that the hole lands on the mouth, and lifted by the ICT face's depth
    map.  Returns ``(vertices (V, 3) um, triangles (F, 3))`` and is deterministic.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spl
    from scipy import ndimage

    from vox3d.face.render import render_full

    tri = np.asarray(load_pickle(BFM_TRI)).T.astype(np.int64)
    V = int(tri.max()) + 1
    e = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    ue, cnt = np.unique(e, axis=0, return_counts=True)
    bnd = ue[cnt == 1]
    nbr: dict[int, list[int]] = {}
    for a, b in bnd:
        nbr.setdefault(int(a), []).append(int(b))
        nbr.setdefault(int(b), []).append(int(a))
    loops, seen = [], set()
    for s in sorted(nbr):
        if s in seen:
            continue
        loop, prev, cur = [s], -1, s
        seen.add(s)
        while True:
            nxt = [x for x in nbr[cur] if x != prev and x not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    loops.sort(key=len)
    outer, hole = np.array(loops[-1]), np.array(loops[0])
    ang = 2 * np.pi * np.arange(len(outer)) / len(outer)
    pos = np.stack([np.cos(ang), np.sin(ang)], 1)
    W = sp.coo_matrix(
        (np.ones(2 * len(ue)), (np.r_[ue[:, 0], ue[:, 1]], np.r_[ue[:, 1], ue[:, 0]])), shape=(V, V)
    ).tocsr()
    L = (sp.diags(np.asarray(W.sum(1)).ravel()) - W).tocsr()
    free = np.setdiff1d(np.arange(V), outer)
    X = np.zeros((V, 2))
    X[outer] = pos
    Lff = L[free][:, free].tocsc()
    Lfb = L[free][:, outer]
    X[free] = np.stack([spl.spsolve(Lff, -(Lfb @ pos[:, k])) for k in range(2)], 1)
    hc = X[hole].mean(0)
    rot = -np.pi / 2 - np.arctan2(hc[1], hc[0])
    R = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    Y = X @ R.T
    hc = Y[hole].mean(0)
    mv, lm = ict_face.mean.astype(np.float64), ict_face.landmarks68
    mouth = mv[lm[[62, 66]]].mean(0)
    lo, hi = mv.min(0), mv.max(0)
    sx = (hi[0] - lo[0]) / 2 * 0.95
    sy = (hi[1] - mouth[1]) / (1 - hc[1])
    xy = np.c_[Y[:, 0] * sx + (lo[0] + hi[0]) / 2, Y[:, 1] * sy + hi[1] - sy]
    res = 0.05  # cm per depth-map pixel
    Wd, Hd = int((hi[0] - lo[0] + 4) / res), int((hi[1] - lo[1] + 4) / res)
    iv = np.c_[(mv[:, 0] - lo[0] + 2) / res, (hi[1] + 2 - mv[:, 1]) / res, mv[:, 2] - lo[2]]
    d = render_full(iv.astype(np.float32), ict_face.triangles, size=(Hd, Wd))
    idx = ndimage.distance_transform_edt(~d.mask, return_distances=False, return_indices=True)
    zmap = d.depth[idx[0], idx[1]]
    coords = np.stack([(hi[1] + 2 - xy[:, 1]) / res - 0.5, (xy[:, 0] - lo[0] + 2) / res - 0.5])
    z = ndimage.map_coordinates(zmap, coords, order=1, mode="nearest") + lo[2]
    return np.c_[xy, z] * 1e4, tri  # cm -> um


@pytest.fixture(scope="module")
def bfm_fixture(tmp_path_factory):
    """A bfm_noneck_v3.pkl with the real shapes: u (3V, 1), w_shp (3V, 40), w_exp (3V, 10),
    keypoints (204,) flattened xyz indices (no tri: 3DDFA-V2 takes it from tri.pkl)."""
    ict_face = fm.load_face_model("ict", subset="narrow_face")
    verts, tri = make_bfm_fixture_vertices(ict_face)
    V = len(verts)
    rng = np.random.default_rng(0)
    # smooth random modes over the face (unit-norm columns, like PCA directions)
    basis_x = verts / 1e5
    feats = np.c_[np.ones(V), basis_x, basis_x**2, np.sin(3 * basis_x), np.cos(2 * basis_x)]
    w = []
    for _ in range(50):
        coef = rng.normal(size=(feats.shape[1], 3))
        col = (feats @ coef).reshape(-1)
        w.append(col / np.linalg.norm(col))
    w = np.stack(w, 1).astype(np.float32)
    # 68 keypoints: the fixture vertices nearest (x, y) to the ICT landmarks
    lm_xy = ict_face.mean[ict_face.landmarks68, :2] * 1e4
    kp_v = np.array([np.argmin(((verts[:, :2] - p) ** 2).sum(1)) for p in lm_xy])
    keypoints = np.stack([3 * kp_v, 3 * kp_v + 1, 3 * kp_v + 2], 1).reshape(-1)
    d = {
        "u": verts.astype(np.float32).reshape(-1, 1),
        "w_shp": w[:, :40],
        "w_exp": w[:, 40:],
        "keypoints": keypoints.astype(np.int64),
    }
    path = tmp_path_factory.mktemp("bfm") / "bfm_noneck_v3.pkl"
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=4)
    return path, d, kp_v, tri


@needs_ict
def test_bfm_loader_real_shapes(bfm_fixture):
    path, d, kp_v, tri = bfm_fixture
    m = fm.load_face_model("bfm", path=path)
    assert m.name == "bfm" and m.units == "um"
    assert m.mean.shape == (38365, 3) and m.id_basis.shape == (40, 38365, 3)
    assert m.exp_basis.shape == (10, 38365, 3)
    assert m.triangles.shape == (76073, 3) and m.triangles.dtype == np.int32
    assert np.array_equal(np.sort(m.triangles, 1), np.sort(tri, 1))  # tri.pkl, reoriented at most
    assert np.array_equal(m.landmarks68, kp_v)
    # 3DDFA-V2's reconstruction: u + w_shp @ a + w_exp @ e, reshaped (3, V) Fortran order
    rng = np.random.default_rng(3)
    a, e = rng.normal(size=40).astype(np.float32) * 1e5, rng.normal(size=10).astype(np.float32)
    ref = (d["u"] + d["w_shp"] @ a[:, None] + d["w_exp"] @ e[:, None]).reshape(3, -1, order="F").T
    assert np.allclose(m.vertices(a, e), ref, rtol=1e-5, atol=1.0)
    std = np.asarray(load_pickle(PARAM_MEAN_STD)["std"])[12:52]
    assert np.allclose(m.id_std, std)
    assert fm.model_layout(m) == P.TDDFA_LAYOUT
    assert m.subset("head") is m
    # ARE pairs by the anatomical rule, from the keypoints
    assert m.are_pairs["oicd"] == (kp_v[36], kp_v[45])
    assert set(m.are_pairs) == set(are_pairs.ARE_KEYS)
    # 3DDFA-V2's mean parameters pose the face inside the 120x120 crop
    mean = np.asarray(load_pickle(PARAM_MEAN_STD)["mean"], np.float32)
    crop = fm.reconstruct(m, mean)
    assert crop.shape == (38365, 3)
    assert 20 < np.ptp(crop[:, 0]) < 120 and 0 < crop[:, 0].mean() < 120


@needs_ict
def test_bfm_fixture_renders_as_a_face(bfm_fixture):
    from vox3d.face.render import Light, render_full

    path, *_ = bfm_fixture
    m = fm.load_face_model("bfm", path=path)
    mean = np.asarray(load_pickle(PARAM_MEAN_STD)["mean"], np.float32)
    img_v = fm.reconstruct(m, mean, roi_box=(0, 0, 240, 240))
    r = render_full(img_v, m.triangles, size=(240, 240), light=Light.phong(), cull="back")
    # front faces face the camera: culling back faces keeps (nearly) everything visible
    r2 = render_full(img_v, m.triangles, size=(240, 240), light=Light.phong())
    assert r.mask.sum() > 0.97 * r2.mask.sum() > 5000
    # the nose tip (landmark 30) is nearer the camera than the eye corners
    lm = img_v[m.landmarks68]
    assert lm[30, 2] > lm[36, 2] and lm[30, 2] > lm[45, 2]
    # the subject's left eye corner (landmark 45) appears on the image right, eyes above mouth
    assert lm[45, 0] > lm[36, 0] and lm[36, 1] < lm[48, 1]


def test_bfm_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "bfm_noneck_v3.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"u": Evil()}, fh)
    with pytest.raises(UnsafeFileError, match="bfm_noneck_v3.pkl"):
        fm.load_face_model("bfm", path=path)
    assert not (tmp_path / "pwned").exists()


def test_bfm_wrong_layouts_are_clear_errors(tmp_path):
    path = tmp_path / "b.pkl"
    V = 10
    good = {
        "u": np.zeros((3 * V, 1), np.float32),
        "w_shp": np.zeros((3 * V, 40), np.float32),
        "w_exp": np.zeros((3 * V, 10), np.float32),
        "keypoints": np.arange(204) % (3 * V),
        "tri": np.array([[0, 1, 2]]).T,
    }
    for key, val, msg in (
        ("w_shp", np.zeros((3 * V, 5), np.float32), "w_shp has shape"),
        ("keypoints", np.arange(10), "keypoints"),
        ("u", np.zeros(31, np.float32), "multiple of 3"),
    ):
        d = dict(good, **{key: val})
        with open(path, "wb") as fh:
            pickle.dump(d, fh)
        with pytest.raises(BadModelFileError, match=msg):
            bfm.load_bfm_arrays(path)
    with pytest.raises(BadModelFileError, match="needs a bfm_noneck_v3.pkl"):
        fm.load_face_model("bfm")
    with pytest.raises(ValueError, match="unknown face model"):
        fm.load_face_model("flame")


@pytest.mark.slow
@needs_ict
def test_ict_archive_parse_into_fresh_cache(tmp_path):
    # parse the real archive in a fresh process with an empty cache, then load the cache
    code = (
        "import time, numpy as np; from vox3d.face import ict_facekit;"
        "t=time.perf_counter(); a=ict_facekit.load_ict_arrays(); t1=time.perf_counter()-t;"
        "t=time.perf_counter(); b=ict_facekit.load_ict_arrays(); t2=time.perf_counter()-t;"
        "assert all(np.array_equal(a[k], b[k]) for k in a); print(t1, t2)"
    )
    env = dict(os.environ, VOX3D_CACHE=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    t_parse, t_cache = map(float, out.stdout.split())
    assert t_cache < t_parse
    assert len(list(tmp_path.glob("ict_facekit_*.npz"))) == 1
