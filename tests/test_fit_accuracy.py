"""Trust checks of the fit-accuracy measures (vox3d.fitting.fit_accuracy): they score the truth
perfectly, and fail for shape-blind answers (the mean face for everyone, somebody else's
face); a similarity transform of the truth is error-free only after alignment."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from vox3d.face.face_model import load_face_model
from vox3d.fitting import fit_accuracy as fa
from vox3d.io import read_tsv
from vox3d.media.split import IdentityMeta, write_meta
from vox3d.voice.predictions import write_predictions

N_IDS, K = 40, 40


@pytest.fixture(scope="module")
def area() -> fa.FaceArea:
    """The real ICT-FaceKit model on the narrow face area (vertices 0-6705), 40 modes."""
    return fa.face_area(load_face_model("ict", subset="face", n_id=K, n_exp=0))


@pytest.fixture(scope="module")
def truth() -> dict[str, np.ndarray]:
    """40 identities drawn like the synthetic corpus: z ~ N(0, 1), clipped to +-3."""
    rng = np.random.default_rng(7)
    return {f"id{i:05d}": np.clip(rng.standard_normal(K), -3, 3) for i in range(N_IDS)}


HELD = [f"id{i:05d}" for i in range(0, N_IDS, 4)]  # 10 held out


def _summary(rows, g="all"):
    return next(r for r in rows if r["set"] == "summary" and r["identity"] == g)


def _ident_rows(rows):
    return [r for r in rows if r["set"] != "summary"]


def test_face_area_is_ict_narrow_face(area):
    assert area.mean.shape == (6706, 3)
    assert area.basis.shape == (K, 6706, 3)
    assert area.mm_per_unit == 10.0  # ICT is in cm
    # the ARE pairs survive the restriction (they index the narrow face area)
    assert max(max(p) for p in area.are_pairs.values()) < 6706


def test_mean_face_oracle_fails(area, truth):
    """(a) the mean identity for everyone: ratio 1.0, mode R^2 <= 0, slope 0."""
    fitted = {i: np.zeros(K) for i in truth}
    rows = fa.accuracy_table(area, fitted, truth, HELD)
    assert len(_ident_rows(rows)) == N_IDS
    assert [r["identity"] for r in rows if r["set"] == "summary"] == ["held_out", "train", "all"]
    for r in rows:
        for c in ("ratio_raw", "ratio_sim", "ratio_norm", "ratio_are"):
            assert r[c] == pytest.approx(1.0, abs=1e-12), (r["identity"], c)
        assert r["err_raw_mm"] > 1.0  # identities differ from the mean face by mm
    for g in fa.GROUPS:
        s = _summary(rows, g)
        for m in range(fa.N_MODES):
            assert s[f"slope_m{m}"] == 0.0
            assert s[f"r2_m{m}"] <= 0.0
            assert s[f"corr2_m{m}"] == 0.0
        assert s["r2_mean"] <= 0.0 and s["slope_mean"] == 0.0
        assert s["r2_vertex"] <= 0.0


def test_truth_is_perfect(area, truth):
    """(b) the truth itself: error 0, R^2 1, slope 1."""
    fitted = {i: c.copy() for i, c in truth.items()}
    rows = fa.accuracy_table(area, fitted, truth, HELD)
    for r in _ident_rows(rows):
        for c in ("err_raw_mm", "err_sim_mm", "err_norm_pct", "are_mean"):
            assert r[c] == pytest.approx(0.0, abs=1e-6), c
        assert r["ratio_raw"] == pytest.approx(0.0, abs=1e-6)
        for m in range(fa.N_MODES):
            assert r[f"fit_c{m}"] == r[f"true_c{m}"]
    for g in fa.GROUPS:
        s = _summary(rows, g)
        for m in range(fa.N_MODES):
            assert s[f"slope_m{m}"] == pytest.approx(1.0)
            assert s[f"r2_m{m}"] == pytest.approx(1.0)
            assert s[f"corr2_m{m}"] == pytest.approx(1.0)
        assert s["r2_vertex"] == pytest.approx(1.0)
        assert s["r2_vertex_sim"] == pytest.approx(1.0)


def test_shuffled_identities_fail(area, truth):
    """(c) the truth of other people: R^2 < 0 and error ratio > 1."""
    ids = sorted(truth)
    fitted = {i: truth[ids[(k + 1) % len(ids)]] for k, i in enumerate(ids)}  # no fixed point
    rows = fa.accuracy_table(area, fitted, truth, HELD)
    for g in fa.GROUPS:
        s = _summary(rows, g)
        assert s["r2_mean"] < 0.0
        if g == "all":  # 40 identities; a single mode of 10 identities can score > 0 by chance
            assert all(s[f"r2_m{m}"] < 0.0 for m in range(fa.N_MODES))
        assert s["r2_vertex"] < 0.0 and s["r2_vertex_sim"] < 0.0
        for c in ("ratio_raw", "ratio_sim", "ratio_norm"):
            assert s[c] > 1.0, (g, c)


def test_similarity_transform_of_truth(area, truth):
    """(d) the truth scaled by 1.1, rotated and translated: ~0 after similarity alignment
    (and after normalisation), but not raw."""
    t = area.meshes(truth["id00003"])
    a = np.deg2rad(12.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rot = rot @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    p = 1.1 * t @ rot.T + np.array([0.7, -1.2, 2.0])
    e = fa.shape_errors(p, t, area.mm_per_unit)
    assert e["err_sim_mm"] < 1e-6
    assert e["err_norm_pct"] < 1e-6
    assert e["err_raw_mm"] > 10.0  # cm-scale translation: > 1 cm off as it stands
    # ARE is scale free and rotation invariant too
    assert fa.are_of(p, t, area.are_pairs)["are_mean"] < 1e-9


def test_shrunk_fit_is_measured_as_shrunk(area, truth):
    """Half the true coefficients: slope 0.5, correlation 1 (a shape-aware but shrunk fit
    looks perfect to corr^2, not to R^2 or the slope), raw error half the mean face's."""
    fitted = {i: 0.5 * c for i, c in truth.items()}
    rows = fa.accuracy_table(area, fitted, truth, HELD)
    for r in _ident_rows(rows):
        assert r["ratio_raw"] == pytest.approx(0.5, rel=1e-9)
    s = _summary(rows)
    for m in range(fa.N_MODES):
        x = np.array([truth[i][m] for i in sorted(truth)])
        assert s[f"slope_m{m}"] == pytest.approx(0.5)
        assert s[f"corr2_m{m}"] == pytest.approx(1.0)
        expect = 1 - 0.25 * (x**2).sum() / ((x - x.mean()) ** 2).sum()
        assert s[f"r2_m{m}"] == pytest.approx(expect)
    assert 0.0 < s["r2_vertex"] < 1.0


def test_frames_take_the_median(area, truth):
    """N predictions of one identity: each error column is the median over them, and the
    mode statistics pool every prediction."""
    t = truth["id00001"]
    bad = t + 2.0
    row = fa.identity_row(area, np.stack([t, bad, t]), t)
    assert row["n_predictions"] == 3
    assert row["err_raw_mm"] == pytest.approx(0.0, abs=1e-6)
    row_bad = fa.identity_row(area, np.stack([bad, bad, t]), t)
    assert row_bad["err_raw_mm"] > 1.0


def test_mode_stats_and_vertex_r2_definitions():
    x = np.array([[-1.0], [0.0], [1.0], [2.0]])
    st = fa.mode_stats(x * 0 + 3.0, x)  # constant answer
    assert st["slope"][0] == 0.0 and st["corr2"][0] == 0.0
    assert st["r2"][0] == pytest.approx(1 - ((3 - x) ** 2).sum() / ((x - 0.5) ** 2).sum())
    st = fa.mode_stats(-x, x)  # anti-correlated: corr^2 1, R^2 very negative
    assert st["corr2"][0] == pytest.approx(1.0) and st["slope"][0] == pytest.approx(-1.0)
    assert st["r2"][0] < -2
    rng = np.random.default_rng(0)
    t = rng.normal(size=(5, 30, 3)) + np.arange(30)[None, :, None] * np.array([1.0, 0.5, 0.2])
    tbar = np.broadcast_to(t.mean(0), t.shape)
    assert fa.vertex_r2(tbar, t) == pytest.approx(0.0, abs=1e-12)
    assert fa.vertex_r2(tbar, t, similarity=True) == pytest.approx(0.0, abs=1e-12)
    assert fa.vertex_r2(t, t, similarity=True) == pytest.approx(1.0)


def test_run_fit_accuracy_files(tmp_path, truth):
    """The rule's entry point: identities.h5 + ground_truth.h5 + metadata -> one row per
    identity (held out = names A-E), the summary rows, and the figure."""
    ids = sorted(truth)
    names = [("Ann", "Ben", "Cid", "Dan", "Eve")[k % 5] if k % 4 == 0 else f"Zed{k}"
             for k in range(len(ids))]  # fmt: skip
    write_meta(
        tmp_path / "meta.csv", [IdentityMeta(i, n, "m") for i, n in zip(ids, names, strict=True)]
    )
    rng = np.random.default_rng(1)
    fitted = {i: 0.3 * truth[i] + 0.2 * rng.standard_normal(K) for i in ids}
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(tmp_path / "identities.h5", "w") as f:
        f.create_dataset("identity", data=np.array(ids, dtype=object), dtype=str_dt)
        f.create_dataset("shape", data=np.stack([fitted[i] for i in ids]).astype(np.float32))
    with h5py.File(tmp_path / "ground_truth.h5", "w") as f:
        g = f.create_group("identities")
        g.create_dataset("id", data=np.array(ids, dtype=object), dtype=str_dt)
        g.create_dataset("id_coef", data=np.stack([truth[i] for i in ids]))
    rows = fa.run_fit_accuracy(
        tmp_path / "identities.h5", tmp_path / "ground_truth.h5", tmp_path / "accuracy.tsv",
        {"name": "ict", "subset": "face", "n_id": K, "n_exp": 10}, tmp_path / "meta.csv",
    )  # fmt: skip
    from vox3d.report.identity_figures import plot_fit_accuracy  # the rule's figure

    plot_fit_accuracy(rows, tmp_path / "accuracy.png")
    table = read_tsv(tmp_path / "accuracy.tsv")
    assert len(table) == len(rows) == N_IDS + 3
    assert list(table[0]) == list(fa.columns())
    held = {r["identity"] for r in table if r["set"] == "held_out"}
    assert held == {i for i, n in zip(ids, names, strict=True) if n[0] in "ABCDE"}
    s = {r["identity"]: r for r in table if r["set"] == "summary"}
    assert int(s["held_out"]["n_identities"]) == 10 and int(s["all"]["n_identities"]) == N_IDS
    # a shrunk, noisy fit: between the mean face and the truth
    assert 0.0 < float(s["all"]["slope_mean"]) < 1.0
    assert 0.0 < float(s["all"]["ratio_raw"]) < 1.0
    png = (tmp_path / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_signed_displacement_along_normals():
    from vox3d.report.identity_figures import signed_displacement

    rng = np.random.default_rng(3)
    mean = rng.normal(size=(50, 3))
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    tangent = np.cross(n, rng.normal(size=(50, 3)))
    d = signed_displacement(mean + 0.3 * n + tangent, mean, n)
    assert d == pytest.approx(np.full(50, 0.3))
    assert signed_displacement(mean - 0.2 * n, mean, n) == pytest.approx(np.full(50, -0.2))


def _predictions_h5(path, truth, with_gt: bool):
    """A predictions.h5 written by vox3d.voice.evaluate's writer, for two held-out identities."""
    ids = sorted(truth)[:2]
    model = {i: np.stack([0.2 * truth[i], 0.3 * truth[i]]) for i in ids}
    targets = {"fitted": {i: 0.5 * truth[i] for i in ids}}
    if with_gt:
        targets["ground_truth"] = {i: truth[i] for i in ids}
    stats = {t: (np.zeros(K), np.ones(K)) for t in targets}
    attrs = {"n_id": K, "target_space": "mesh"}
    write_predictions(path, {t: {"model": model} for t in targets}, targets, stats, ids, attrs)


def test_identities_figure_gains_ground_truth_columns(tmp_path, truth):
    """evaluate/identities.png through vox3d.report.identity_figures.plot_identities: with the synthetic
    corpus's ground truth three more columns (true mesh, true - mean face, |fitted - true|)."""
    from PIL import Image

    from vox3d.report import identity_figures

    widths = {}
    for gt in (False, True):
        p = tmp_path / f"p{gt}.h5"
        _predictions_h5(p, truth, gt)
        png = tmp_path / f"ids{gt}.png"
        identity_figures.plot_identities(p, {"name": "ict", "subset": "face", "n_exp": 0}, png, n=2)
        with Image.open(png) as im:
            widths[gt] = im.size[0]
    # 2.0 in per column at 110 dpi: 7 columns without the truth, 10 with it
    assert widths[False] == pytest.approx(7 * 2.0 * 110, abs=2)
    assert widths[True] == pytest.approx(10 * 2.0 * 110, abs=2)


def test_are_uses_the_pairs_the_face_model_carries(area, truth):
    """ARE follows the face model's ``are_pairs``: a pair the model lacks (None) is NaN and
    left out of the mean; other pairs give other numbers."""
    p, t = area.meshes(0.5 * truth["id00002"]), area.meshes(truth["id00002"])
    full = fa.are_of(p, t, area.are_pairs)
    no_ear = fa.are_of(p, t, {**area.are_pairs, "ear": None})
    assert np.isnan(no_ear["are_er"])
    assert no_ear["are_mean"] == pytest.approx(
        np.mean([full[f"are_{r}"] for r in ("fr", "mr", "cr")])
    )
    moved = fa.are_of(p, t, {**area.are_pairs, "cheek": area.are_pairs["forehead"]})
    assert moved["are_cr"] == pytest.approx(full["are_fr"])
    assert full["are_mean"] > 0


def _by_target_h5(path, true, pred, fitted, with_gt: bool):
    """predictions.h5 by vox3d.voice.evaluate's writer (by_target/<target>/model, target_<target>)."""
    ids = [f"id{k:05d}" for k in range(len(true))]
    targets = {"fitted": dict(zip(ids, fitted, strict=True))}
    if with_gt:
        targets["ground_truth"] = dict(zip(ids, true, strict=True))
    model = {i: np.stack([p, p]) for i, p in zip(ids, pred, strict=True)}
    k = true.shape[1]
    stats = {t: (np.zeros(k), np.full(k, 2.0)) for t in targets}
    attrs = {"n_id": k, "target_space": "mesh"}
    write_predictions(path, {t: {"model": model} for t in targets}, targets, stats, ids, attrs)


def test_voice_directions_figure_projects_on_the_generators_directions(tmp_path):
    """evaluate/voice_directions.png: with a ground truth, the panels are the synthetic
    corpus's 8 face -> voice directions (vox3d.synthetic.synth_rig.mapping_directions); an oracle's points
    lie on the diagonal, the mean face's on the training mean's line; without a ground
    truth, the first 8 coefficients standardised by the training identities."""
    from vox3d.face.face_model import load_face_model
    from vox3d.report.identity_figures import plot_voice_directions, voice_direction_points
    from vox3d.synthetic import synth_rig

    rng = np.random.default_rng(0)
    z = rng.normal(size=(12, 40))
    fs = {"name": "ict", "subset": "face"}
    d, _ = synth_rig.mapping_directions(load_face_model("ict", subset="head", n_id=40, n_exp=0))
    p = tmp_path / "oracle.h5"
    _by_target_h5(p, z, z, 0.5 * z, with_gt=True)
    pts = voice_direction_points(p, fs)
    assert pts["names"][:2] == ["vtl_cm", "log_f0_hz"] and len(pts["names"]) == 8
    assert np.allclose(pts["true"], z @ d.T, atol=1e-5)
    assert np.allclose(pts["pred"], pts["true"], atol=1e-5)
    assert np.allclose(pts["fitted"], 0.5 * pts["true"], atol=1e-5)
    p = tmp_path / "mean_face.h5"
    _by_target_h5(p, z, np.zeros_like(z), 0.5 * z, with_gt=True)
    pts = voice_direction_points(p, fs)
    assert np.allclose(pts["pred"], pts["base"][None, :])
    p = tmp_path / "real.h5"
    _by_target_h5(p, z, z, 3.0 * z, with_gt=False)
    pts = voice_direction_points(p, fs)
    assert pts["names"][0] == "identity coefficient 0" and not pts["has_gt"]
    assert np.allclose(pts["true"], 1.5 * z[:, :8], atol=1e-5)  # (3 z - 0) / 2
    assert pts["fitted"] is None
    plot_voice_directions(tmp_path / "oracle.h5", tmp_path / "vd.png", fs)
    png = (tmp_path / "vd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
