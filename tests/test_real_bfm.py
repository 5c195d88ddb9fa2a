"""Real VoxCeleb2 clips with ``face_model: bfm`` (issue 9, item 1; docs/real_voxceleb.md).

* the whole workflow on the 10 real clips of ``real/voxceleb`` (9 identities) with 3DDFA-V2's
  mb05 regressor and no BFM basis (``assets.bfm: null``): parameters per frame and per
  identity, features, a voice model trained and evaluated in parameter space, no ARE;
* the same workflow with a user-supplied BFM file (a small synthetic pickle in
  3DDFA-V2's ``bfm_noneck_v3.pkl`` layout): meshes, ARE and vertex RMSE come back;
* the BFM file's wiring through the library (loader, train, evaluate, figures) without
  Snakemake.

The BFM file here is synthetic (the real one is academic-licence and not shipped): the
ICT-FaceKit narrow face re-expressed in BFM's layout and units, so it proves the wiring,
not accuracy.
"""

from __future__ import annotations

import csv
import math
import os
import pickle
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from tiny_workflow import ROOT, run_snakemake

from vox3d.paths import BFM_TRI, DATA_ROOT, ICT_FACEKIT, PARAM_MEAN_STD
from vox3d.safeload import load_pickle

needs_ict = pytest.mark.shared_data(ICT_FACEKIT)
REAL = DATA_ROOT / "real"


def write_small_bfm(path: Path) -> dict[str, np.ndarray]:
    """Write a synthetic BFM pickle in 3DDFA-V2's ``bfm_noneck_v3.pkl`` layout.

    Keys (3DDFA-V2 ``bfm/bfm.py``): ``u (3V, 1)`` float32 mean shape, xyz interleaved per
    vertex, micrometres; ``w_shp (3V, 40)``, ``w_exp (3V, 10)`` bases; ``tri (3, F)``
    triangles (3DDFA-V2 transposes them on load); ``keypoints (204,)`` the 68 landmarks as
    indices into the 3V values (x, y, z of each).  The geometry is the ICT-FaceKit narrow
    face (6,706 vertices): identity mode k of ICT scaled so that one BFM coefficient std
    (``param_mean_std_62d_120x120.pkl``) moves the face as one ICT std.  Only numpy arrays
    in a dict: what the restricted unpickler admits.
    """
    from vox3d.face.face_model import load_face_model

    ict = load_face_model("ict", subset="narrow_face", n_id=40, n_exp=10)
    std = np.asarray(load_pickle(PARAM_MEAN_STD)["std"], np.float64)
    V = ict.n_vertices
    um = 1e4  # cm -> um
    w_shp = (ict.id_basis * um / std[12:52, None, None]).reshape(40, 3 * V).T
    w_exp = (ict.exp_basis * um / std[52:62, None, None]).reshape(10, 3 * V).T
    lm = ict.landmarks68
    d = {
        "u": (ict.mean * um).astype(np.float32).reshape(3 * V, 1),
        "w_shp": np.ascontiguousarray(w_shp, dtype=np.float32),
        "w_exp": np.ascontiguousarray(w_exp, dtype=np.float32),
        "tri": np.ascontiguousarray(ict.triangles.T, dtype=np.int32),
        "keypoints": np.stack([3 * lm, 3 * lm + 1, 3 * lm + 2], 1).reshape(-1).astype(np.int64),
    }
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=4)
    return d


def write_real_meta(path: Path) -> dict[str, str]:
    """The VoxCeleb1-format meta csv of the real clips from ``real/manifest.csv`` (gender
    only: the clips carry no VoxCeleb1 names); returns ``{identity: gender}``."""
    from vox3d.media.split import IdentityMeta, write_meta

    genders: dict[str, str] = {}
    with open(REAL / "manifest.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["path"].startswith("voxceleb/"):
                genders[r["identity"]] = r["gender"]
    write_meta(path, [IdentityMeta(i, "", g) for i, g in genders.items()])
    return genders


# ---------------------------------------------------------------------------------------
# the BFM file through the library
# ---------------------------------------------------------------------------------------


@needs_ict
def test_user_bfm_file_layout_and_triangles(tmp_path):
    from vox3d.face import face_model as fm
    from vox3d.params import TDDFA_LAYOUT

    d = write_small_bfm(tmp_path / "bfm_synthetic.pkl")
    m = fm.load_face_model("bfm", path=tmp_path / "bfm_synthetic.pkl", tri_path=BFM_TRI)
    V = len(d["u"]) // 3
    assert m.mean.shape == (V, 3) and m.id_basis.shape == (40, V, 3) and m.units == "um"
    # not named bfm_noneck_v3.pkl and has its own tri: 3DDFA-V2 uses that, not tri.pkl
    assert np.array_equal(np.sort(m.triangles, 1), np.sort(d["tri"].T, 1))
    assert np.array_equal(m.landmarks68, d["keypoints"][0::3] // 3)
    # 3DDFA-V2's reconstruction: (u + w_shp a + w_exp e).reshape(3, -1, order="F")
    rng = np.random.default_rng(0)
    a, e = rng.normal(size=40) * 2e5, rng.normal(size=10)
    ref = (d["u"] + d["w_shp"] @ a[:, None] + d["w_exp"] @ e[:, None]).reshape(3, -1, order="F")
    np.testing.assert_allclose(m.vertices(a, e), ref.T, rtol=1e-4, atol=50.0)
    assert fm.model_layout(m) == TDDFA_LAYOUT
    # ARE pairs chosen by the anatomical rule from the keypoints
    assert m.are_pairs["oicd"] == (int(m.landmarks68[36]), int(m.landmarks68[45]))
    # named bfm_noneck_v3.pkl, 3DDFA-V2 takes configs/tri.pkl (38,365-vertex mesh): a clear
    # error here, since this file has another topology
    os.replace(tmp_path / "bfm_synthetic.pkl", tmp_path / "bfm_noneck_v3.pkl")
    with pytest.raises(ValueError, match=r"tri\.pkl: triangle indices outside"):
        fm.load_face_model("bfm", path=tmp_path / "bfm_noneck_v3.pkl", tri_path=BFM_TRI)
    # without its own tri any name takes tri_path
    d.pop("tri")
    with open(tmp_path / "notri.pkl", "wb") as fh:
        pickle.dump(d, fh)
    with pytest.raises(ValueError, match=r"tri\.pkl: triangle indices outside"):
        fm.load_face_model("bfm", path=tmp_path / "notri.pkl", tri_path=BFM_TRI)


@needs_ict
def test_user_bfm_file_gives_mesh_metrics(tmp_path):
    """With the BFM file set, train/evaluate/figures run in mesh space: ARE rows come back,
    and the parameter metrics too (same numbers as without the file)."""
    from test_evaluate import _write_inputs

    from vox3d.io import read_tsv
    from vox3d.report import figures, identity_figures
    from vox3d.voice.baselines import METHODS
    from vox3d.voice.evaluate import evaluate_parameters, run_evaluate
    from vox3d.voice.train import run_train

    bfm = tmp_path / "bfm_synthetic.pkl"
    write_small_bfm(bfm)
    names, coef = _write_inputs(tmp_path, n_ids=8, k=40)
    std = np.asarray(load_pickle(PARAM_MEAN_STD)["std"], np.float32)[12:52]
    with h5py.File(tmp_path / "identities.h5", "a") as f:
        f["shape"][...] = coef * std  # BFM coefficient scale
        f.attrs["face_model"] = "bfm"
    shards = [tmp_path / "features" / "shard-00000.h5"]
    settings = {"preset": "demo", "steps": 20, "batch_size": 4, "crop_min": 40, "crop_max": 60,
                "checkpoint_every": 10, "device": "cpu", "split": "hash", "val_fraction": 0.3}  # fmt: skip
    fm_cfg = {"name": "bfm", "path": str(bfm), "tri_path": str(BFM_TRI), "n_id": 40, "n_exp": 10}
    final = run_train(settings, shards, tmp_path / "identities.h5", None, tmp_path / "train",
                      face_model=fm_cfg, threads=1)  # fmt: skip
    assert final["target_space"] == "mesh"
    assert final["history"][-1].get("loss_vertex") is not None
    ev = tmp_path / "ev"
    run_evaluate(
        tmp_path / "train" / "model.pt", tmp_path / "train" / "split.tsv",
        tmp_path / "identities.h5", shards, ev / "metrics.tsv", ev / "per_identity.tsv",
        ev / "predictions.h5", face_model=fm_cfg, settings={"bootstrap": 20}, device="cpu",
        out_per_coefficient=ev / "per_coefficient.tsv",
    )  # fmt: skip
    rows = read_tsv(ev / "metrics.tsv")
    assert {r["target_space"] for r in rows} == {"mesh"}
    for r in rows:
        for c in ("are_mean", "rmse", "r2_vertex", "rmse_z", "r2_param"):
            assert math.isfinite(float(r[c])), (r["method"], c)
        # not the 53,215-vertex BFM: the named fallback pairs, no ear pair, so ER is NaN
        # and the headline is the mean of the other three ratios
        assert r["are_pairs"] == "bfm_fallback_no_ear" and "ER unavailable" in r["note"]
        assert math.isnan(float(r["are_er"])), r["method"]
        ratios = [float(r[c]) for c in ("are_fr", "are_mr", "are_cr")]
        assert all(math.isfinite(x) for x in ratios), r["method"]
        assert float(r["are_mean"]) == pytest.approx(sum(ratios) / 3)
    mf = next(r for r in rows if r["method"] == "train_mean")
    assert float(mf["r2_vertex"]) == pytest.approx(0.0, abs=1e-9)
    assert float(mf["r2_param"]) == pytest.approx(0.0, abs=1e-9)
    # the parameter columns equal a direct call on the stored predictions
    with h5py.File(ev / "predictions.h5", "r") as f:
        preds = {m: {i: f[m][i][()] for i in f[m]} for m in METHODS if m in f}
        tgt = {"fitted": {i: f["target_fitted"][i][()] for i in f["target_fitted"]}}
        mu, sd = f["train_coef_mean"][()], f["train_coef_std"][()]
    assert [r["method"] for r in rows] == [m for m in METHODS if m in preds]
    direct, _, _ = evaluate_parameters(preds, tgt, mu, sd, n_boot=20)
    for r, s in zip(rows, direct, strict=True):
        assert float(r["rmse_z"]) == pytest.approx(s["rmse_z"], rel=1e-5)
    figures.plot_are_bars(ev / "metrics.tsv", ev / "are.png")
    identity_figures.plot_identities(ev / "predictions.h5", fm_cfg, ev / "ids.png", n=2)
    assert (ev / "ids.png").stat().st_size > 20000  # rendered meshes


# ---------------------------------------------------------------------------------------
# the workflow on the real clips
# ---------------------------------------------------------------------------------------


def _snakemake(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_snakemake(args, cwd, timeout=900)


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


#: Small training for the test (the config file's own settings take about a minute).
FAST = {
    "train": {"steps": 30, "batch_size": 8, "crop_min": 50, "crop_max": 100,
              "checkpoint_every": 15},
    "evaluate": {"bootstrap": 50, "n_figures": 2},
}  # fmt: skip


@needs_ict
@pytest.mark.slow
def test_workflow_on_real_clips_with_bfm(tmp_path, real_clips):
    out = tmp_path / "out"
    genders = write_real_meta(tmp_path / "meta.tsv")
    assert len(genders) == 9 and sum(g == "m" for g in genders.values()) == 4
    over = tmp_path / "test.yaml"
    over.write_text(
        yaml.safe_dump(
            {
                **FAST,
                "videos_dir": str(REAL / "voxceleb"),
                "meta_csv": str(tmp_path / "meta.tsv"),
                "out_dir": str(out),
            }
        )
    )
    common = ["--cores", "2", "--configfile", str(ROOT / "config.yaml"),
              str(ROOT / "config" / "real_bfm.yaml"), str(over)]  # fmt: skip
    t0 = time.perf_counter()
    run = _snakemake(common, tmp_path)
    took = time.perf_counter() - t0
    assert run.returncode == 0, run.stderr[-4000:]

    # every clip: fit parameters or a reject reason
    clips = {str(p.relative_to(REAL / "voxceleb")) for p in real_clips}
    rejected = {r["path"]: r["reason"] for r in _tsv(out / "extract" / "rejects.tsv")}
    rejected |= {r["path"]: r["reason"] for r in _tsv(out / "fit" / "rejects.tsv")}
    fitted: dict[str, int] = {}
    for shard in sorted((out / "fit").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            assert f.attrs["face_model"] == "bfm" and f.attrs["n_id"] == 40
            assert f["frames/params"].shape[1] == 62
            keep = f["frames/keep"][()].astype(bool)
            params = f["frames/params"][()]
            assert np.isfinite(params[keep]).all()
            for vi, p in enumerate(f["videos/path"][()]):
                fitted[_s(p)] = int(f["videos/n_kept"][vi])
    for c in clips:
        assert fitted.get(c, 0) > 0 or rejected.get(c), c
    stats = {r["shard"]: r for r in _tsv(out / "fit" / "stats.tsv")}["total"]
    assert int(stats["videos"]) == 10 and int(stats["kept"]) > 0

    # identities.h5: 40 BFM shape coefficients for every identity with kept frames
    with_frames = {c.split("/")[0] for c in clips if fitted.get(c, 0) > 0}
    with h5py.File(out / "fit" / "identities.h5", "r") as f:
        ids = [_s(x) for x in f["identity"][()]]
        shape = f["shape"][()]
        assert f.attrs["face_model"] == "bfm"
    assert set(ids) == with_frames and shape.shape == (len(ids), 40)
    assert np.isfinite(shape).all() and np.abs(shape).max() > 0

    # features: every extracted clip has an utterance or a features reject
    feats, feat_rejects = set(), {r["path"] for r in _tsv(out / "features" / "rejects.tsv")}
    for shard in sorted((out / "features").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            feats |= {_s(v) for v in f["index/video"][()]}
            assert f["frames"].shape[1] == 64  # CMP's 64-band log-mel
    assert all(c in feats or c in feat_rejects or c in rejected for c in clips)
    assert {c.split("/")[0] for c in feats} >= set(ids)

    # training and evaluation in parameter space: no ARE, a note saying why
    split = _tsv(out / "train" / "split.tsv")
    val = sorted(r["identity"] for r in split if r["set"] == "val")
    assert val == ["id06209", "id07414"]
    assert {r["identity"]: r["gender"] for r in split}["id06811"] == "m"
    rows = _tsv(out / "evaluate" / "metrics.tsv")
    methods = ["model", "population_mean", "train_mean", "gender_mean", "shuffled_voice"]
    assert [r["method"] for r in rows] == methods
    assert not any(c.startswith("are_") for c in rows[0]) and "rmse" not in rows[0]
    for r in rows:
        assert r["target_space"] == "params" and int(r["n_identities"]) == 2
        assert "bfm_noneck_v3.pkl" in r["note"] and "not a result" in r["note"]
        for c in ("rmse_param", "rmse_z", "r2_param"):
            assert math.isfinite(float(r[c]))
    by_method = {r["method"]: r for r in rows}
    assert float(by_method["train_mean"]["r2_param"]) == pytest.approx(0.0, abs=1e-9)
    assert len(_tsv(out / "evaluate" / "per_coefficient.tsv")) == len(methods) * 40
    log = _tsv_csv(out / "train" / "log.csv")
    assert all(r["loss_vertex"] == "" for r in log) and len(log) >= 2
    for name in ("are_bars", "training_curves", "dataset_stats", "identities"):
        assert (out / "evaluate" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    print(f"real-clip workflow (parameter space): {took:.0f} s")

    # the user gives a BFM file: the same workflow now has meshes and ARE rows
    bfm = tmp_path / "user" / "bfm_synthetic.pkl"
    bfm.parent.mkdir()
    write_small_bfm(bfm)
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"assets": {"bfm": str(bfm)}}))
    run = _snakemake([*common, str(user)], tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = _tsv(out / "evaluate" / "metrics.tsv")
    assert {r["target_space"] for r in rows} == {"mesh"}
    for r in rows:
        for c in ("are_mean", "rmse", "rmse_z"):
            assert math.isfinite(float(r[c])), (r["method"], c)
        assert "bfm_noneck_v3.pkl" not in r["note"] and "not a result" in r["note"]
        # a synthetic BFM of another topology than CMP's 53,215 vertices: no ear ratio
        assert r["are_pairs"] == "bfm_fallback_no_ear" and math.isnan(float(r["are_er"]))
    assert (out / "evaluate" / "identities.png").stat().st_size > 20000


def _tsv_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
