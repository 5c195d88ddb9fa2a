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
