"""``train.input_norm``: the supervised voice model reads CMP's per-utterance normalised
log-mel frames (``utterance``) or the log-mel before that normalisation (``none``), in
training, evaluation and ``vox3d voice2mesh`` alike."""

from __future__ import annotations

import numpy as np
import pytest

from vox3d.audio.fbank import INPUT_NORMS, model_input, normalize, repeat_frames


def test_model_input_undoes_cmp_normalisation():
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(300, 64)) * rng.uniform(0.5, 3, 64) + rng.normal(-6, 2, 64)).astype(
        np.float32
    )
    frames, mean, std = normalize(raw)
    assert np.abs(frames.mean(0)).max() < 1e-5  # normalised: the long-term spectrum is gone
    back = model_input(frames, mean, std, "none")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, raw, atol=2e-5 * np.abs(raw).max())
    assert model_input(frames, mean, std, "utterance") is not None
    np.testing.assert_array_equal(model_input(frames, mean, std, "utterance"), frames)
    # tiling to CMP's 1000 stored frames commutes with it
    np.testing.assert_array_equal(
        model_input(repeat_frames(frames), mean, std, "none"),
        repeat_frames(model_input(frames, mean, std, "none")),
    )
    with pytest.raises(ValueError, match="choose from"):
        model_input(frames, mean, std, "global")
    with pytest.raises(ValueError, match="do not match"):
        model_input(frames, mean[:10], std, "none")
    assert INPUT_NORMS[0] == "utterance"


def _shard(path, n_ids: int = 12, k: int = 6, seed: int = 0, nan_stats: bool = False):
    """A feature shard whose identities differ only in each utterance's long-term spectrum:
    raw log-mel = shape coefficients x a fixed mix + white noise, stored CMP-normalised with
    the per-utterance mean and std in the index (as the features stage stores them)."""
    from vox3d.audio.fbank import FeatureConfig, UtteranceFeatures
    from vox3d.audio.features import Utterance, write

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_ids, k)).astype(np.float32)
    mix = rng.normal(size=(k, 64)).astype(np.float32)
    names = [f"id{i:05d}" for i in range(n_ids)]
    kept, raws = [], {}
    for i, ident in enumerate(names):
        for u in range(3):
            t = int(rng.integers(200, 400))
            raw = (coef[i] @ mix + rng.normal(size=(t, 64))).astype(np.float32)
            frames, mean, std = normalize(raw)
            if nan_stats:
                mean = std = np.full(64, np.nan, np.float32)
            raws.setdefault(ident, []).append(raw)
            kept.append(
                Utterance(
                    f"{ident}/yt{u}/00001.mp4", ident, UtteranceFeatures(frames, mean, std, 1)
                )
            )
    write(path, kept, [], FeatureConfig())
    return names, coef, raws


def test_load_utterances_gives_the_features_before_normalisation(tmp_path):
    from vox3d.audio.featurestore import load_utterances

    p = tmp_path / "shard-00000.h5"
    names, _, raws = _shard(p)
    norm = load_utterances([p])
    none = load_utterances([p], names[3:5], norm="none")
    assert sorted(none) == names[3:5]
    for ident in names[3:5]:
        for u_norm, u_none, raw in zip(norm[ident], none[ident], raws[ident], strict=True):
            t = len(raw)
            assert len(u_none) == 1000  # tiled like CMP's stored arrays
            np.testing.assert_allclose(u_none[:t], raw, atol=1e-4)
            assert np.abs(u_norm[:t].mean(0)).max() < 1e-4  # the stored frames: normalised
    q = tmp_path / "nan" / "shard-00000.h5"
    _shard(q, nan_stats=True)
    with pytest.raises(ValueError, match="no normalisation statistics"):
        load_utterances([q], norm="none")
    assert len(load_utterances([q])) == 12  # CMP's frames need no statistics


def test_model_config_input_norm():
    from vox3d.voice.voice_model import ModelConfig

    assert ModelConfig().input_norm == "utterance"
    # a model file written before the field was trained on CMP's normalised frames
    d = ModelConfig(input_norm="none").to_dict()
    assert ModelConfig.from_dict(d).input_norm == "none"
    del d["input_norm"]
    assert ModelConfig.from_dict(d).input_norm == "utterance"
    with pytest.raises(ValueError, match="input_norm"):
        ModelConfig(input_norm="global")


def test_voice2mesh_feeds_the_input_the_model_was_trained_on(tmp_path):
    import torch

    from vox3d.audio.featurefile import file_features
    from vox3d.paths import DATA_ROOT
    from vox3d.tools.voice2mesh import predict_coefficients
    from vox3d.voice.train_checkpoints import save_checkpoint
    from vox3d.voice.voice_model import ModelConfig, VoiceToShape

    wav = DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav"
    uf = file_features(wav)
    x_norm = torch.from_numpy(repeat_frames(uf.frames))[None]
    x_raw = torch.from_numpy(repeat_frames(model_input(uf.frames, uf.mean, uf.std, "none")))[None]
    for norm, x, other in (("utterance", x_norm, x_raw), ("none", x_raw, x_norm)):
        torch.manual_seed(0)
        m = VoiceToShape(ModelConfig(n_out=8, input_norm=norm)).eval()
        p = tmp_path / f"{norm}.pt"
        save_checkpoint(
            p, {"model": m.state_dict(), "model_config": m.cfg.to_dict(), "face_model": "ict"}
        )
        coef, _ = predict_coefficients(wav, p)
        np.testing.assert_allclose(coef, m.coefficients(x)[0].numpy(), rtol=1e-5, atol=1e-6)
        assert np.abs(coef - m.coefficients(other)[0].numpy()).max() > 1e-3


@pytest.mark.slow
def test_only_the_unnormalised_model_hears_the_long_term_spectrum(tmp_path):
    """The toy voices carry the shape in each utterance's mean log-mel only: trained and
    evaluated on CMP's normalised frames the model cannot beat the train mean; on the
    features before normalisation it must (so training, evaluation and the model file all
    pass the setting on)."""
    from vox3d.voice.evaluate import run_evaluate
    from vox3d.voice.train import run_train
    from vox3d.voice.voice_model import load_model

    shard = tmp_path / "features" / "shard-00000.h5"
    shard.parent.mkdir()
    names, coef, _ = _shard(shard)
    import h5py

    with h5py.File(tmp_path / "identities.h5", "w", libver="latest") as f:
        f.create_dataset("identity", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("shape", data=coef)
        f.attrs["face_model"] = "ict"
        f.attrs["n_id"] = coef.shape[1]
    first = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    lines += [
        f"{n}\t{first[(2 * i) % 26]}name_{i}\t{'mf'[i % 2]}\tX\tdev" for i, n in enumerate(names)
    ]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    out = {}
    for norm in INPUT_NORMS:
        settings = {
            "preset": "demo", "steps": 150, "batch_size": 16, "crop_min": 50, "crop_max": 150,
            "checkpoint_every": 50, "lr": 2e-3, "device": "cpu", "split": "auto",
            "select_fraction": 0.0, "input_norm": norm,
        }  # fmt: skip
        run_train(
            settings, [shard], tmp_path / "identities.h5", tmp_path / "meta.csv",
            tmp_path / norm, face_model={"name": "ict", "subset": "face"}, threads=1,
        )  # fmt: skip
        model, _ = load_model(tmp_path / norm / "model.pt")
        assert model.cfg.input_norm == norm
        summ = run_evaluate(
            tmp_path / norm / "model.pt", tmp_path / norm / "split.tsv",
            tmp_path / "identities.h5", [shard], tmp_path / norm / "ev" / "metrics.tsv",
            tmp_path / norm / "ev" / "per_identity.tsv", tmp_path / norm / "ev" / "pred.h5",
            face_model={"name": "ict", "subset": "face"}, settings={"bootstrap": 0},
            device="cpu",
        )  # fmt: skip
        out[norm] = {r["method"]: r for r in summ}
    none, cmp = out["none"], out["utterance"]
    assert none["model"]["rmse"] < 0.8 * none["train_mean"]["rmse"]
    assert cmp["model"]["rmse"] > 0.95 * cmp["train_mean"]["rmse"]
    assert none["train_mean"]["rmse"] == pytest.approx(cmp["train_mean"]["rmse"])
