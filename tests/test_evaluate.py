"""Evaluation against baselines on an analytic linear face model with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vox3d.evaluate import baseline_predictions, evaluate_predictions, mesh_vertices

PAIRS = {"oicd": (0, 1), "ear": (2, 3), "forehead": (4, 5), "mid": (6, 7), "cheek": (8, 9)}


def linear_model(k: int = 3, v: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(v, 3)) * 5
    mean[0], mean[1] = [-5, 0, 0], [5, 0, 0]
    basis = rng.normal(size=(k, v, 3)) * 0.3
    return mean, basis


def test_mesh_vertices_linear():
    mean, basis = linear_model()
    c = np.array([1.0, -2.0, 0.5])
    v = mesh_vertices(mean, basis, c)
    np.testing.assert_allclose(v, mean + 1.0 * basis[0] - 2.0 * basis[1] + 0.5 * basis[2])
    assert mesh_vertices(mean, basis, np.stack([c, c])).shape == (2, 40, 3)


def test_perfect_model_beats_baselines_and_scores_zero():
    mean, basis = linear_model()
    rng = np.random.default_rng(1)
    ids = [f"id{i}" for i in range(12)]
    coef = {i: rng.normal(size=3) for i in ids}
    genders = {i: "mf"[n % 2] for n, i in enumerate(ids)}
    train, val = ids[:8], ids[8:]
    preds = {"model": {i: np.stack([coef[i], coef[i]]) for i in val}}
    preds.update(baseline_predictions({i: coef[i] for i in train}, genders, val))
    tmean = np.mean([coef[i] for i in train], axis=0)
    summ, per_id = evaluate_predictions(
        preds, {"fitted": {i: coef[i] for i in val}}, mean, basis, PAIRS, None, tmean, n_boot=200
    )
    by = {r["method"]: r for r in summ}
    assert set(by) == {"model", "mean_face", "gender_mean"}
    assert by["model"]["are_mean"] == pytest.approx(0.0, abs=1e-12)
    assert by["model"]["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert by["model"]["r2_vertex"] == pytest.approx(1.0)
    assert by["mean_face"]["are_mean"] > 0 and by["mean_face"]["rmse"] > 0
    assert by["mean_face"]["r2_vertex"] == pytest.approx(0.0, abs=1e-12)
    assert by["mean_face"]["rmse_lo"] <= by["mean_face"]["rmse"] <= by["mean_face"]["rmse_hi"]
    assert len(per_id) == 3 * len(val)
    # the mean-face prediction is the training mean for every identity
    np.testing.assert_allclose(preds["mean_face"][val[0]][0], tmean)


def test_gender_mean_uses_training_genders_only():
    c = {"a": np.array([1.0]), "b": np.array([3.0]), "c": np.array([10.0])}
    g = {"a": "m", "b": "m", "c": "f", "x": "f", "y": "", "z": "m"}
    p = baseline_predictions(c, g, ["x", "y", "z"])
    assert p["gender_mean"]["x"][0, 0] == 10.0
    assert p["gender_mean"]["z"][0, 0] == 2.0
    assert p["gender_mean"]["y"][0, 0] == pytest.approx(14.0 / 3)
    assert p["mean_face"]["x"][0, 0] == pytest.approx(14.0 / 3)


# ---------------------------------------------------------------------------------------
# the rule functions end to end on small files in the stages' real formats
# ---------------------------------------------------------------------------------------


def _write_inputs(tmp_path, n_ids=12, k=6, seed=0):
    """Feature shard (vox3d.features format), identities.h5 (fit format), meta csv."""
    import h5py

    from vox3d.fbank import FeatureConfig, UtteranceFeatures
    from vox3d.features import Utterance, write

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_ids, k)).astype(np.float32)
    mix = rng.normal(size=(k, 64)).astype(np.float32)
    names = [f"id{i:05d}" for i in range(n_ids)]
    kept = []
    for i, ident in enumerate(names):
        for u in range(3):
            t = int(rng.integers(200, 400))
            f = (coef[i] @ mix + rng.normal(size=(t, 64))).astype(np.float32)
            nan = np.full(64, np.nan, np.float32)
            kept.append(
                Utterance(f"{ident}/yt{u}/00001.mp4", ident, UtteranceFeatures(f, nan, nan, 1))
            )
    write(tmp_path / "features" / "shard-00000.h5", kept, [], FeatureConfig())
    with h5py.File(tmp_path / "identities.h5", "w", libver="latest") as f:
        f.create_dataset("identity", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("shape", data=coef)
        f.attrs["face_model"] = "ict"
        f.attrs["n_id"] = k
    first = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    lines += [
        f"{n}\t{first[(2 * i) % 26]}name_{i}\t{'mf'[i % 2]}\tX\tdev" for i, n in enumerate(names)
    ]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    return names, coef


@pytest.mark.slow
def test_train_evaluate_figures_on_stage_formats(tmp_path):
    from vox3d import figures
    from vox3d.evaluate import face_model_from_config, run_evaluate
    from vox3d.io import read_tsv
    from vox3d.train import run_train

    names, coef = _write_inputs(tmp_path)
    shards = [tmp_path / "features" / "shard-00000.h5"]
    settings = {
        "preset": "demo",
        "steps": 150,
        "batch_size": 16,
        "crop_min": 50,
        "crop_max": 150,
        "checkpoint_every": 50,
        "lr": 2e-3,
        "device": "cpu",
        "split": "auto",
    }
    final = run_train(
        settings,
        shards,
        tmp_path / "identities.h5",
        tmp_path / "meta.csv",
        tmp_path / "train",
        face_model={"name": "ict", "subset": "face"},
        threads=1,
    )
    train_ids, val_ids = final["identities"], final["val_identities"]
    assert final["split_method"] == "names" and not set(train_ids) & set(val_ids)
    h = final["history"]
    assert h[-1]["loss"] < h[0]["loss"]
    summ = run_evaluate(
        tmp_path / "train" / "model.pt",
        tmp_path / "train" / "split.tsv",
        tmp_path / "identities.h5",
        shards,
        tmp_path / "ev" / "metrics.tsv",
        tmp_path / "ev" / "per_identity.tsv",
        tmp_path / "ev" / "predictions.h5",
        face_model={"name": "ict", "subset": "face"},
        settings={"bootstrap": 200},
        device="cpu",
    )
    rows = read_tsv(tmp_path / "ev" / "metrics.tsv")
    assert {r["method"] for r in rows} == {"model", "mean_face", "gender_mean"}
    for c in ("are_er", "are_fr", "are_mr", "are_cr", "are_mean", "rmse", "are_mean_lo", "rmse_hi"):
        assert c in rows[0]
    by = {r["method"]: r for r in summ}
    # the toy voices carry the shape linearly: the model must beat the mean face
    assert by["model"]["rmse"] < by["mean_face"]["rmse"]
    assert by["model"]["are_mean"] < by["mean_face"]["are_mean"]
    fm = face_model_from_config({"name": "ict", "subset": "face"}, n_id=coef.shape[1])
    figures.plot_are_bars(tmp_path / "ev" / "metrics.tsv", tmp_path / "ev" / "are.png")
    figures.plot_training_curves(tmp_path / "train" / "log.csv", tmp_path / "ev" / "curves.png")
    figures.plot_dataset_stats(
        tmp_path / "ev" / "stats.png", split_tsv=tmp_path / "train" / "split.tsv"
    )
    figures.plot_identity_panels(
        tmp_path / "ev" / "predictions.h5", fm, tmp_path / "ev" / "ids.png", n=2
    )
    for p in ("are", "curves", "stats", "ids"):
        assert (tmp_path / "ev" / f"{p}.png").stat().st_size > 5000


def test_read_ground_truth_layouts(tmp_path):
    """The synthetic corpus's table layout (identities/id + id_coef) and per-group layout."""
    import h5py

    from vox3d.train import read_ground_truth

    c = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        g = f.create_group("identities")
        g.create_dataset(
            "id", data=np.array(["x", "y", "z"], dtype=object), dtype=h5py.string_dtype()
        )
        g.create_dataset(
            "name", data=np.array(["A", "B", "C"], dtype=object), dtype=h5py.string_dtype()
        )
        g.create_dataset("id_coef", data=c)
        g.create_dataset("voice", data=np.zeros((3, 12)))
    gt = read_ground_truth(tmp_path / "a.h5")
    assert sorted(gt) == ["x", "y", "z"]
    np.testing.assert_array_equal(gt["y"], c[1])
    with h5py.File(tmp_path / "b.h5", "w") as f:
        for i, n in enumerate("xy"):
            f.create_group(f"identities/{n}").create_dataset("id_coef", data=c[i])
    gt = read_ground_truth(tmp_path / "b.h5")
    np.testing.assert_array_equal(gt["x"], c[0])
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("other", data=c)
    with pytest.raises(ValueError, match="c.h5"):
        read_ground_truth(tmp_path / "c.h5")


# ---------------------------------------------------------------------------------------
# parameter space (no face-model basis: BFM without bfm_noneck_v3.pkl)
# ---------------------------------------------------------------------------------------


def test_parameter_metrics_by_hand():
    from vox3d.evaluate import evaluate_parameters

    mu, sd = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    preds = {"model": {"x": np.array([[0.0, 0.0], [2.0, 2.0]])}}
    summ, per_id, per_coef = evaluate_parameters(
        preds, {"fitted": {"x": np.array([1.0, 2.0])}}, mu, sd, n_boot=0
    )
    (s,) = summ
    assert s["rmse_param"] == pytest.approx((np.sqrt(2.5) + np.sqrt(0.5)) / 2)
    assert s["rmse_z"] == pytest.approx((1.0 + np.sqrt(0.5)) / 2)
    assert per_id[0]["sq_err_z"] == pytest.approx(1.5) and per_id[0]["sq_dev_z"] == 2.0
    assert s["r2_param"] == pytest.approx(0.25)
    assert np.isnan(s["r2_param_lo"])  # one identity: no interval
    assert [c["r2"] for c in per_coef] == pytest.approx([0.0, 0.5])
    assert [c["rmse"] for c in per_coef] == pytest.approx([1.0, np.sqrt(2.0)])


def test_parameter_metrics_perfect_model_mean_and_gender_baselines():
    from vox3d.evaluate import evaluate_parameters

    rng = np.random.default_rng(2)
    ids = [f"id{i}" for i in range(14)]
    coef = {i: rng.normal(size=5) * [1e5, 5e4, 1e4, 1e3, 10] for i in ids}
    genders = {i: "mf"[n % 2] for n, i in enumerate(ids)}
    train, val = ids[:9], ids[9:]
    preds = {"model": {i: np.stack([coef[i]] * 3) for i in val}}
    preds.update(baseline_predictions({i: coef[i] for i in train}, genders, val))
    tr = np.stack([coef[i] for i in train])
    summ, per_id, per_coef = evaluate_parameters(
        preds, {"fitted": {i: coef[i] for i in val}}, tr.mean(0), tr.std(0), n_boot=100
    )
    by = {s["method"]: s for s in summ}
    assert list(by) == ["model", "mean_face", "gender_mean"]
    assert by["model"]["rmse_param"] == 0 and by["model"]["r2_param"] == 1.0
    assert by["mean_face"]["r2_param"] == pytest.approx(0.0, abs=1e-12)
    assert by["model"]["r2_param_lo"] == by["model"]["r2_param_hi"] == 1.0
    # rmse_z of the mean face: RMS of the standardised deviations, by hand
    z = (np.stack([coef[i] for i in val]) - tr.mean(0)) / tr.std(0)
    assert by["mean_face"]["rmse_z"] == pytest.approx(np.sqrt((z**2).mean(1)).mean())
    mf = [c for c in per_coef if c["method"] == "mean_face"]
    assert len(mf) == 5 and all(abs(c["r2"]) < 1e-12 for c in mf)
    assert all(c["r2"] == 1.0 for c in per_coef if c["method"] == "model")
    # standardisation makes the small coefficients count: a wrong last one is seen
    wrong = {i: c.copy() for i, c in coef.items()}
    for i in val:
        wrong[i][4] += 20.0
    s2, _, pc2 = evaluate_parameters(
        {"model": {i: wrong[i][None] for i in val}},
        {"fitted": {i: coef[i] for i in val}},
        tr.mean(0),
        tr.std(0),
        n_boot=0,
    )
    assert s2[0]["rmse_z"] == pytest.approx(20.0 / tr.std(0)[4] / np.sqrt(5))
    assert [c["r2"] for c in pc2][:4] == [1.0] * 4 and pc2[4]["r2"] < 1.0


def test_target_space_resolution():
    from vox3d.evaluate import NO_MESH_NOTE, mesh_available, resolve_target_space

    assert mesh_available({"name": "ict"}) and not mesh_available({"name": "bfm", "path": None})
    assert mesh_available({"name": "bfm", "path": "/x/bfm_noneck_v3.pkl"})
    assert resolve_target_space("auto", {"name": "ict"}) == ("mesh", "")
    assert resolve_target_space("auto", {"name": "bfm"}) == ("params", NO_MESH_NOTE)
    assert resolve_target_space("auto", {"name": "bfm", "path": "b.pkl"})[0] == "mesh"
    assert resolve_target_space("params", {"name": "ict"})[0] == "params"
    with pytest.raises(ValueError, match="assets.bfm"):
        resolve_target_space("mesh", {"name": "bfm", "path": None})
    with pytest.raises(ValueError, match="train.target"):
        resolve_target_space("vertices", {"name": "ict"})


def test_train_evaluate_figures_in_parameter_space(tmp_path):
    """BFM without its basis: training on parameters only, parameter metrics, no ARE
    columns, a note saying why, figures that draw no mesh; no face model is ever loaded."""
    import h5py

    from vox3d import figures
    from vox3d.evaluate import NO_MESH_NOTE, run_evaluate
    from vox3d.io import read_tsv
    from vox3d.train import run_train

    names, coef = _write_inputs(tmp_path, n_ids=8, k=40)
    with h5py.File(tmp_path / "identities.h5", "a") as f:
        f.attrs["face_model"] = "bfm"
    shards = [tmp_path / "features" / "shard-00000.h5"]
    settings = {"preset": "demo", "steps": 20, "batch_size": 4, "crop_min": 40, "crop_max": 60,
                "checkpoint_every": 10, "device": "cpu", "split": "hash", "val_fraction": 0.3,
                "hidden": [], "dropout": 0.0}  # fmt: skip
    fm_cfg = {"name": "bfm", "path": None, "tri_path": None}
    final = run_train(settings, shards, tmp_path / "identities.h5", tmp_path / "meta.csv",
                      tmp_path / "train", face_model=fm_cfg, threads=1)  # fmt: skip
    assert final["target_space"] == "params" and NO_MESH_NOTE in final["notes"]
    assert (
        final["train_config"]["vertex_weight"] == 0 and final["train_config"]["ratio_weight"] == 0
    )
    h = final["history"]
    assert all(r.get("loss_vertex") is None and r.get("loss_ratio") is None for r in h)
    assert h[-1]["loss"] == pytest.approx(
        final["train_config"]["param_weight"] * h[-1]["loss_param"]
    )
    ev = tmp_path / "ev"
    summ = run_evaluate(
        tmp_path / "train" / "model.pt", tmp_path / "train" / "split.tsv",
        tmp_path / "identities.h5", shards, ev / "metrics.tsv", ev / "per_identity.tsv",
        ev / "predictions.h5", face_model=fm_cfg, settings={"bootstrap": 50}, device="cpu",
        out_per_coefficient=ev / "per_coefficient.tsv",
    )  # fmt: skip
    rows = read_tsv(ev / "metrics.tsv")
    assert [r["method"] for r in rows] == ["model", "mean_face", "gender_mean"]
    assert not any(c.startswith("are_") or c == "rmse" for c in rows[0])
    assert {r["target_space"] for r in rows} == {"params"}
    assert all("ARE" in r["note"] and "pipeline" in r["note"] for r in rows)
    assert float(rows[1]["r2_param"]) == pytest.approx(0.0, abs=1e-9)  # mean shape
    pc = read_tsv(ev / "per_coefficient.tsv")
    assert len(pc) == 3 * 40 and {r["coefficient"] for r in pc} == {str(k) for k in range(40)}
    # the table's numbers follow from predictions.h5 alone
    with h5py.File(ev / "predictions.h5", "r") as f:
        assert f.attrs["target_space"] == "params"
        mu, sd = f["train_mean"][()], f["train_std"][()]
        val = [v.decode() if isinstance(v, bytes) else v for v in f["val_identities"][()]]
        z = [np.sqrt((((f["model"][i][()] - f["target_fitted"][i][()]) / sd) ** 2).mean(1)).mean()
             for i in val]  # fmt: skip
    assert summ[0]["rmse_z"] == pytest.approx(np.mean(z), rel=1e-5)
    train_rows = [r for r in read_tsv(tmp_path / "train" / "split.tsv") if r["set"] == "train"]
    tc = np.stack([coef[names.index(r["identity"])] for r in train_rows]).astype(np.float64)
    np.testing.assert_allclose(mu, tc.mean(0), rtol=1e-6)
    figures.plot_are_bars(ev / "metrics.tsv", ev / "are.png")
    figures.plot_identities(ev / "predictions.h5", fm_cfg, ev / "ids.png", n=2)
    for p in ("are", "ids"):
        assert (ev / f"{p}.png").stat().st_size > 5000
