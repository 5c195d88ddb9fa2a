"""Evaluation against baselines on an analytic linear face model with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vox3d.voice.baselines import baseline_predictions
from vox3d.voice.evaluate import evaluate_predictions, mesh_vertices

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
    assert list(by) == ["model", "population_mean", "train_mean", "gender_mean"]
    assert by["model"]["are_mean"] == pytest.approx(0.0, abs=1e-12)
    assert by["model"]["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert by["model"]["r2_vertex"] == pytest.approx(1.0)
    assert by["model"]["r2_vertex_sim"] == pytest.approx(1.0)
    for base in ("population_mean", "train_mean", "gender_mean"):
        assert by[base]["are_mean"] > 0 and by[base]["rmse"] > 0
        assert by[base]["r2_vertex"] < 0.5 and by[base]["r2_vertex_sim"] < 0.5
    assert by["train_mean"]["r2_vertex"] == pytest.approx(0.0, abs=1e-12)
    assert by["train_mean"]["r2_vertex_sim"] == pytest.approx(0.0, abs=1e-12)
    assert by["train_mean"]["rmse_lo"] <= by["train_mean"]["rmse"] <= by["train_mean"]["rmse_hi"]
    assert len(per_id) == 4 * len(val)
    # train_mean is the training mean, population_mean the model's mean face (zeros)
    np.testing.assert_allclose(preds["train_mean"][val[0]][0], tmean)
    np.testing.assert_array_equal(preds["population_mean"][val[0]][0], np.zeros(3))


def test_gender_mean_uses_training_genders_only():
    c = {"a": np.array([1.0]), "b": np.array([3.0]), "c": np.array([10.0])}
    g = {"a": "m", "b": "m", "c": "f", "x": "f", "y": "", "z": "m"}
    p = baseline_predictions(c, g, ["x", "y", "z"])
    assert p["gender_mean"]["x"][0, 0] == 10.0
    assert p["gender_mean"]["z"][0, 0] == 2.0
    assert p["gender_mean"]["y"][0, 0] == pytest.approx(14.0 / 3)
    assert p["train_mean"]["x"][0, 0] == pytest.approx(14.0 / 3)
    assert p["population_mean"]["x"][0, 0] == 0.0


def test_shuffled_voice_is_a_seeded_derangement():
    from vox3d.voice.baselines import shuffled_predictions

    preds = {f"id{i}": np.full((2, 3), float(i)) for i in range(9)}
    sh = shuffled_predictions(preds, seed=3)
    assert sorted(sh) == sorted(preds)
    donors = {i: int(sh[i][0, 0]) for i in sh}
    assert all(donors[i] != int(i[2:]) for i in sh)  # never its own voice
    assert sorted(donors.values()) == list(range(9))  # every voice used once
    assert {i: v[0, 0] for i, v in shuffled_predictions(preds, seed=3).items()} == donors
    assert shuffled_predictions({"a": np.zeros((1, 3))}) == {}


def _scenario(model_kind: str, n_val: int = 16, n_boot: int = 400):
    """Evaluate one kind of 'model' prediction against the four baselines, with comparisons."""
    from vox3d.voice.baselines import compare_methods, shuffled_predictions

    mean, basis = linear_model(k=3, v=40)
    rng = np.random.default_rng(7)
    ids = [f"id{i:02d}" for i in range(12 + n_val)]
    coef = {i: rng.normal(size=3) * 1.5 for i in ids}
    genders = {i: "mf"[n % 2] for n, i in enumerate(ids)}
    train, val = ids[:12], ids[12:]
    truth = {i: np.stack([coef[i], coef[i]]) for i in val}
    model = {
        "perfect": truth,
        "population_mean": {i: np.zeros((1, 3)) for i in val},
        "shuffled": shuffled_predictions(truth, seed=1),
    }[model_kind]
    preds = {"model": model, "shuffled_voice": shuffled_predictions(model, seed=0)}
    preds.update(baseline_predictions({i: coef[i] for i in train}, genders, val))
    tmean = np.mean([coef[i] for i in train], axis=0)
    summ, per_id = evaluate_predictions(
        preds, {"fitted": {i: coef[i] for i in val}}, mean, basis, PAIRS, None, tmean, n_boot=100
    )
    comp = compare_methods(per_id, "mesh", n_boot=n_boot, seed=0)
    return {r["method"]: r for r in summ}, {(c["baseline"], c["metric"]): c for c in comp}


def test_comparisons_tell_perfect_mean_face_and_shuffled_voice_apart():
    # perfect predictions: zero error, and better than every baseline with a small p
    by, comp = _scenario("perfect")
    assert by["model"]["are_mean"] == pytest.approx(0.0, abs=1e-12)
    assert by["model"]["r2_vertex"] == pytest.approx(1.0)
    assert by["model"]["r2_vertex_sim"] == pytest.approx(1.0)
    assert by["shuffled_voice"]["r2_vertex"] < 0  # a wrong voice is worse than the mean
    for base in ("population_mean", "train_mean", "gender_mean", "shuffled_voice"):
        for metric in ("are_mean", "rmse"):
            c = comp[(base, metric)]
            assert c["delta"] < 0 and c["delta_hi"] < 0 and c["p"] < 0.01, (base, metric)
        for metric in ("r2_vertex", "r2_vertex_sim"):
            c = comp[(base, metric)]
            assert c["delta"] > 0 and c["delta_lo"] > 0 and c["p"] < 0.01, (base, metric)
    assert comp[("train_mean", "r2_vertex")]["delta"] == pytest.approx(1.0)
    # the model *is* the population mean: no difference from that baseline, p = 1; and a
    # voice-independent model is never better than its own predictions shuffled
    by, comp = _scenario("population_mean")
    for metric in ("are_mean", "rmse", "r2_vertex", "r2_vertex_sim"):
        for base in ("population_mean", "shuffled_voice"):
            c = comp[(base, metric)]
            assert c["delta"] == pytest.approx(0.0, abs=1e-12) and c["p"] == 1.0, (base, metric)
            assert c["delta_lo"] == pytest.approx(0.0, abs=1e-12)
    # predictions of the wrong identities: worse than the training mean (R^2 < 0), and
    # no better than the shuffled-voice baseline
    by, comp = _scenario("shuffled")
    assert by["model"]["r2_vertex"] < 0
    assert comp[("train_mean", "rmse")]["delta"] > 0
    assert comp[("train_mean", "r2_vertex")]["delta"] < 0
    assert comp[("shuffled_voice", "rmse")]["p"] > 0.05


# ---------------------------------------------------------------------------------------
# the rule functions end to end on small files in the stages' real formats
# ---------------------------------------------------------------------------------------


def _write_inputs(tmp_path, n_ids=12, k=6, seed=0):
    """Feature shard (vox3d.audio.features format), identities.h5 (fit format), meta csv."""
    import h5py

    from vox3d.audio.fbank import FeatureConfig, UtteranceFeatures, normalize
    from vox3d.audio.features import Utterance, write

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_ids, k)).astype(np.float32)
    mix = rng.normal(size=(k, 64)).astype(np.float32)
    names = [f"id{i:05d}" for i in range(n_ids)]
    kept = []
    for i, ident in enumerate(names):
        for u in range(3):
            t = int(rng.integers(200, 400))
            f = (coef[i] @ mix + rng.normal(size=(t, 64))).astype(np.float32)
            # stored as the features stage stores them: normalised, statistics in the index
            # (the shape lives in the mean, which train.input_norm: none gives the model)
            kept.append(
                Utterance(f"{ident}/yt{u}/00001.mp4", ident, UtteranceFeatures(*normalize(f), 1))
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
    from vox3d.face.face_model import face_model_from_config
    from vox3d.io import read_tsv
    from vox3d.report import figures
    from vox3d.voice.evaluate import run_evaluate
    from vox3d.voice.train import run_train

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
        # the last step's weights: 9 training identities leave one or two to select on, too
        # few for the selection to mean anything here (it is tested in test_train.py)
        "select_fraction": 0.0,
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
    assert [r["method"] for r in rows] == [
        "model", "population_mean", "train_mean", "gender_mean", "shuffled_voice"
    ]  # fmt: skip
    for c in ("are_er", "are_fr", "are_mr", "are_cr", "are_mean", "rmse", "are_mean_lo", "rmse_hi",
              "r2_vertex", "r2_vertex_sim", "r2_vertex_sim_lo", "are_pairs"):  # fmt: skip
        assert c in rows[0]
    assert {r["are_pairs"] for r in rows} == {"cmp"}
    by = {r["method"]: r for r in summ}
    # the toy voices carry the shape linearly: the model must beat the mean shapes
    assert by["model"]["rmse"] < by["train_mean"]["rmse"]
    assert by["model"]["are_mean"] < by["train_mean"]["are_mean"]
    fm = face_model_from_config({"name": "ict", "subset": "face"}, n_id=coef.shape[1])
    figures.plot_are_bars(tmp_path / "ev" / "metrics.tsv", tmp_path / "ev" / "are.png")
    figures.plot_training_curves(tmp_path / "train" / "log.csv", tmp_path / "ev" / "curves.png")
    figures.plot_dataset_stats(
        tmp_path / "ev" / "stats.png", split_tsv=tmp_path / "train" / "split.tsv"
    )
    from vox3d.report.identity_figures import plot_identity_panels

    plot_identity_panels(tmp_path / "ev" / "predictions.h5", fm, tmp_path / "ev" / "ids.png", n=2)
    for p in ("are", "curves", "stats", "ids"):
        assert (tmp_path / "ev" / f"{p}.png").stat().st_size > 5000


def test_ground_truth_has_one_layout(tmp_path):
    """vox3d.synthetic.ground_truth.GroundTruth reads the layout vox3d.synthetic.synth_card writes (identities/id +
    id_coef, gender, voice) and refuses others, naming the file."""
    import h5py

    from vox3d.synthetic.ground_truth import GroundTruth, GroundTruthError

    def read_ground_truth(p):
        return GroundTruth.read(p).coefficients()

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
        g.create_dataset("voice", data=np.arange(36.0).reshape(3, 12))
        g.create_dataset(
            "gender", data=np.array(["m", "f", "m"], dtype=object), dtype=h5py.string_dtype()
        )
        f.attrs["format"] = "vox3d synthetic ground truth"
        f.attrs["voice_ceiling"] = '{"r2_vertex": 0.5}'
    gt = read_ground_truth(tmp_path / "a.h5")
    assert sorted(gt) == ["x", "y", "z"]
    np.testing.assert_array_equal(gt["y"], c[1])
    full = GroundTruth.read(tmp_path / "a.h5")
    assert full.genders() == {"x": "m", "y": "f", "z": "m"} and full.voices()["z"][0] == 24
    assert full.ceiling() == {"r2_vertex": 0.5} and full.name == ("A", "B", "C")
    with h5py.File(tmp_path / "b.h5", "w") as f:  # one group per identity: not written
        for i, n in enumerate("xy"):
            f.create_group(f"identities/{n}").create_dataset("id_coef", data=c[i])
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.create_dataset("other", data=c)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.attrs["format"] = "vox3d fit shard"
    for bad in ("b.h5", "c.h5", "d.h5"):
        with pytest.raises(GroundTruthError, match=bad):
            read_ground_truth(tmp_path / bad)
    (tmp_path / "e.h5").write_bytes(b"not hdf5")
    with pytest.raises(GroundTruthError, match="e.h5"):
        read_ground_truth(tmp_path / "e.h5")


# ---------------------------------------------------------------------------------------
# parameter space (no face-model basis: BFM without bfm_noneck_v3.pkl)
# ---------------------------------------------------------------------------------------


def test_parameter_metrics_by_hand():
    from vox3d.voice.evaluate import evaluate_parameters

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
    from vox3d.voice.evaluate import evaluate_parameters

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
    assert list(by) == ["model", "population_mean", "train_mean", "gender_mean"]
    assert by["model"]["rmse_param"] == 0 and by["model"]["r2_param"] == 1.0
    assert by["train_mean"]["r2_param"] == pytest.approx(0.0, abs=1e-12)
    assert by["model"]["r2_param_lo"] == by["model"]["r2_param_hi"] == 1.0
    # rmse_z of the mean face: RMS of the standardised deviations, by hand
    z = (np.stack([coef[i] for i in val]) - tr.mean(0)) / tr.std(0)
    assert by["train_mean"]["rmse_z"] == pytest.approx(np.sqrt((z**2).mean(1)).mean())
    mf = [c for c in per_coef if c["method"] == "train_mean"]
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
    from vox3d.face.face_model import mesh_available
    from vox3d.voice.targets import NO_MESH_NOTE, resolve_target_space

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

    from vox3d.io import read_tsv
    from vox3d.report import figures, identity_figures
    from vox3d.voice.evaluate import NO_MESH_NOTE, run_evaluate
    from vox3d.voice.train import run_train

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
    # a ground truth offset from the fitted shapes: its baselines use its own training mean
    gt = coef.astype(np.float64) + 2.0 + np.random.default_rng(5).normal(size=coef.shape) * 0.3
    with h5py.File(tmp_path / "gt.h5", "w") as f:
        f.create_dataset("identities/id", data=np.array(names, dtype=object),
                         dtype=h5py.string_dtype())  # fmt: skip
        f.create_dataset("identities/id_coef", data=gt)
    summ = run_evaluate(
        tmp_path / "train" / "model.pt", tmp_path / "train" / "split.tsv",
        tmp_path / "identities.h5", shards, ev / "metrics.tsv", ev / "per_identity.tsv",
        ev / "predictions.h5", ground_truth_h5=tmp_path / "gt.h5", face_model=fm_cfg,
        settings={"bootstrap": 50}, device="cpu", out_per_coefficient=ev / "per_coefficient.tsv",
        out_comparisons=ev / "comparisons.tsv",
    )  # fmt: skip
    all_rows = read_tsv(ev / "metrics.tsv")
    rows = [r for r in all_rows if r["target"] == "fitted"]
    gt_rows = {r["method"]: r for r in all_rows if r["target"] == "ground_truth"}
    assert float(gt_rows["train_mean"]["r2_param"]) == pytest.approx(0.0, abs=1e-9)
    assert float(gt_rows["population_mean"]["r2_param"]) < -1.0  # 2.0 away from zero
    train_rows = [r for r in read_tsv(tmp_path / "train" / "split.tsv") if r["set"] == "train"]
    tr_gt = np.stack([gt[names.index(r["identity"])] for r in train_rows])
    with h5py.File(ev / "predictions.h5", "r") as f:
        some = next(iter(f["by_target/ground_truth/train_mean"]))
        np.testing.assert_allclose(f["by_target/ground_truth/train_mean"][some][0],
                                   tr_gt.mean(0), rtol=1e-6)  # fmt: skip
        assert not f["by_target/ground_truth/population_mean"][some][()].any()  # zeros
        # the fitted rows' train_mean is the fitted training mean, not the ground truth's
        assert np.abs(f["train_mean"][some][0] - tr_gt.mean(0)).min() > 1.0
    comp = read_tsv(ev / "comparisons.tsv")
    assert {(c["target"], c["baseline"]) for c in comp} == {
        (t, b) for t in ("fitted", "ground_truth")
        for b in ("population_mean", "train_mean", "gender_mean", "shuffled_voice")
    }  # fmt: skip
    assert {c["metric"] for c in comp} == {"rmse_z", "r2_param"}
    for c in comp:
        assert float(c["delta"]) == pytest.approx(float(c["value"]) - float(c["baseline_value"]))
        assert float(c["delta_lo"]) <= float(c["delta"]) <= float(c["delta_hi"])
        assert 0 < float(c["p"]) <= 1
    assert [r["method"] for r in rows] == [
        "model", "population_mean", "train_mean", "gender_mean", "shuffled_voice"
    ]  # fmt: skip
    assert not any(c.startswith("are_") or c == "rmse" for c in rows[0])
    assert {r["target_space"] for r in rows} == {"params"}
    assert all("ARE" in r["note"] and "pipeline" in r["note"] for r in rows)
    assert float(rows[2]["r2_param"]) == pytest.approx(0.0, abs=1e-9)  # training mean
    pc = read_tsv(ev / "per_coefficient.tsv")
    assert len(pc) == 2 * 5 * 40 and {r["coefficient"] for r in pc} == {str(k) for k in range(40)}
    # the table's numbers follow from predictions.h5 alone
    with h5py.File(ev / "predictions.h5", "r") as f:
        assert f.attrs["target_space"] == "params"
        mu, sd = f["train_coef_mean"][()], f["train_coef_std"][()]
        val = [v.decode() if isinstance(v, bytes) else v for v in f["val_identities"][()]]
        z = [np.sqrt((((f["model"][i][()] - f["target_fitted"][i][()]) / sd) ** 2).mean(1)).mean()
             for i in val]  # fmt: skip
    assert summ[[s["target"] for s in summ].index("fitted")]["rmse_z"] == pytest.approx(
        np.mean(z), rel=1e-5
    )
    tc = np.stack([coef[names.index(r["identity"])] for r in train_rows]).astype(np.float64)
    np.testing.assert_allclose(mu, tc.mean(0), rtol=1e-6)
    figures.plot_are_bars(ev / "metrics.tsv", ev / "are.png")
    identity_figures.plot_identities(ev / "predictions.h5", fm_cfg, ev / "ids.png", n=2)
    for p in ("are", "ids"):
        assert (ev / f"{p}.png").stat().st_size > 5000


def test_predictions_reader_reads_what_the_writer_wrote(tmp_path):
    """vox3d.voice.predictions: the reader gives back the writer's arrays, dtypes and attributes;
    the top-level method groups are the fitted target's; a file of another kind fails
    naming it."""
    import h5py

    from vox3d.voice.predictions import Predictions, PredictionsError, write_predictions

    rng = np.random.default_rng(0)
    ids = ["id2", "id1"]
    preds = {
        t: {
            "model": {i: rng.normal(size=(3, 4)) for i in ids},
            "population_mean": {"id1": np.zeros((1, 4))},
        }
        for t in ("fitted", "ground_truth")
    }
    targets = {t: {i: rng.normal(size=4) for i in ids} for t in preds}
    stats = {t: (rng.normal(size=4), rng.uniform(1, 2, size=4)) for t in preds}
    attrs = {"face_model": "ict", "n_id": 4, "target_space": "mesh", "note": "n"}
    path = tmp_path / "predictions.h5"
    write_predictions(path, preds, targets, stats, ids, attrs)
    pr = Predictions.read(path)
    assert pr.identities == ("id1", "id2") and pr.n_id == 4 and pr.has_ground_truth
    assert (pr.face_model, pr.target_space, pr.note) == ("ict", "mesh", "n")
    for t in preds:
        for i in ids:
            got = pr.method("model", t)[i]
            assert got.dtype == np.float32 and np.array_equal(
                got, preds[t]["model"][i].astype(np.float32)
            )
            assert np.array_equal(pr.targets[t][i], targets[t][i].astype(np.float32))
        assert np.array_equal(pr.train_stats[t][1], stats[t][1])
    assert pr.method("gender_mean") == {} and set(pr.method("population_mean")) == {"id1"}
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["model/id1"][()], pr.method("model", "fitted")["id1"])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(PredictionsError, match="other.h5"):
        Predictions.read(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("no")
    with pytest.raises(PredictionsError, match="text.h5"):
        Predictions.read(tmp_path / "text.h5")
