"""The unsupervised variant (issue 20): crops kept by the fit, the networks and losses of
vox3d.voice.distill, the speaker pretraining, and a training run that reads no 3D label."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from vox3d.fitting.fit_shard import (
    FitShard,
    FitShardError,
    decode_crop,
    encode_crop,
    write_fit_shard,
)
from vox3d.fitting.quality import Thresholds
from vox3d.params import ict_layout
from vox3d.voice import distill, distill_train


def _fitter(n_id=40, n_exp=10, crops_per_video=None):
    return SimpleNamespace(
        cfg=SimpleNamespace(
            face_model="ict",
            thresholds=Thresholds(),
            precision="fp32",
            landmarks="none",
            crops_per_video=crops_per_video,
        ),
        layout=ict_layout(n_id, n_exp),
        model_file="ict_regressor.pth",
    )


def _face(rng, shade):
    """A smooth 120x120 BGR image (JPEG-friendly) with a per-person shade."""
    y, x = np.mgrid[0:120, 0:120]
    base = 90 + 60 * np.exp(-((x - 60) ** 2 + (y - 55) ** 2) / 900.0)
    img = np.stack([base * s for s in shade], -1) + rng.normal(0, 2, (120, 120, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shard(path, rng, identities, frames_per_video=6, n_id=40, n_exp=10, crops=True, cap=None):
    videos = [{"video": f"{i}/v/{k}.mp4", "identity": i} for i in identities for k in range(2)]
    n = len(videos) * frames_per_video
    video = np.repeat(np.arange(len(videos), dtype=np.int32), frames_per_video)
    keep = rng.random(n) < 0.8
    frames = {
        "video": video,
        "keep": keep,
        "params": rng.normal(0, 1, (n, 12 + n_id + n_exp)).astype(np.float32),
    }
    shade = {i: rng.uniform(0.6, 1.2, 3) for i in identities}
    if crops:
        c = np.empty(n, object)
        for r in np.flatnonzero(keep):
            c[r] = encode_crop(_face(rng, shade[videos[video[r]]["identity"]]))
        frames["crop"] = c
    write_fit_shard(path, videos, frames, [], {"frames": n}, _fitter(n_id, n_exp, cap))
    return frames


# ------------------------------------------------------------------ crops in the fit shard


def test_fit_shard_keeps_the_crops_of_kept_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = _shard(tmp_path / "s.h5", rng, ["idA", "idB"])
    shard = FitShard.read(tmp_path / "s.h5")
    assert "crop" not in shard.frames and shard.has_crops
    rows, imgs = shard.crops()
    assert np.array_equal(rows, np.flatnonzero(frames["keep"]))
    for r, img in zip(rows, imgs, strict=True):
        assert np.array_equal(img, decode_crop(frames["crop"][r]))
    some = rows[[3, 0]]
    got_rows, got = shard.crops(some)
    assert np.array_equal(got_rows, some) and np.array_equal(got, imgs[[3, 0]])
    missing = np.flatnonzero(~frames["keep"])[:1]
    with pytest.raises(FitShardError, match="no crop"):
        shard.crops(missing)
    n, size = FitShard.crop_storage(tmp_path / "s.h5")
    assert n == len(rows) == int(frames["keep"].sum())
    assert size == sum(len(frames["crop"][r]) for r in rows)


def test_crop_selection_spreads_the_cap_over_each_videos_kept_frames():
    from vox3d.fitting.fit_shard import crop_selection

    video = np.zeros(41, np.int32)
    has = np.ones(41, bool)
    # 41 kept frames, cap 8: floor(k * 40 / 7 + 1/2), first and last included
    assert np.flatnonzero(crop_selection(video, has, 8)).tolist() == [0, 6, 11, 17, 23, 29, 34, 40]
    assert np.flatnonzero(crop_selection(video, has, 1)).tolist() == [0]
    assert np.flatnonzero(crop_selection(video, has, 2)).tolist() == [0, 40]
    assert np.array_equal(crop_selection(video, has, 41), has)
    assert np.array_equal(crop_selection(video, has, 100), has)  # cap above the count: all
    assert np.array_equal(crop_selection(video, has, None), has)  # null: every kept frame
    # frames without a crop are never chosen; positions count the frames that have one
    has = np.array([False, True, False, True, True, False, True, True, False])
    got = crop_selection(np.zeros(9, np.int32), has, 3)
    assert np.flatnonzero(got).tolist() == [1, 4, 7] and not np.any(got & ~has)
    assert np.array_equal(crop_selection(np.zeros(9, np.int32), has, None), has)
    # videos independent (also when their rows interleave); a video with none adds nothing
    video = np.array([0, 1, 0, 1, 0, 1, 0, 2, 2])
    has = np.array([True, True, True, True, True, True, True, False, False])
    got = crop_selection(video, has, 2)
    assert np.flatnonzero(got).tolist() == [0, 1, 5, 6]
    alone = crop_selection(np.zeros(3, np.int32), np.ones(3, bool), 2)
    assert np.array_equal(got[video == 1], alone)
    assert crop_selection(np.zeros(0, np.int32), np.zeros(0, bool), 3).shape == (0,)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="crops_per_video"):
            crop_selection(video, has, bad)


def test_a_capped_shard_stores_min_cap_kept_crops_a_video(tmp_path):
    rng = np.random.default_rng(5)
    cap = 3
    frames = _shard(tmp_path / "s.h5", rng, ["idA", "idB", "idC"], frames_per_video=12, cap=cap)
    shard = FitShard.read(tmp_path / "s.h5")
    assert shard.crops_per_video == cap
    kept = np.bincount(frames["video"][frames["keep"]], minlength=len(shard.video_paths))
    assert kept.max() > cap  # else the cap decides nothing
    rows, imgs = shard.crops()
    stored = np.bincount(frames["video"][rows], minlength=len(kept))
    assert np.array_equal(stored, np.minimum(kept, cap))  # fails if the cap were ignored
    assert np.all(frames["keep"][rows])
    from vox3d.fitting.fit_shard import crop_selection

    want = np.flatnonzero(crop_selection(frames["video"], frames["keep"], cap))
    assert np.array_equal(rows, want)
    for r, img in zip(rows, imgs, strict=True):
        assert np.array_equal(img, decode_crop(frames["crop"][r]))
    n, size = FitShard.crop_storage(tmp_path / "s.h5")
    assert n == len(rows) == int(np.minimum(kept, cap).sum())
    assert size == sum(len(frames["crop"][r]) for r in rows)
    # every frame's fields are still there, kept ones included
    assert np.array_equal(shard.frames["keep"], frames["keep"])
    assert np.array_equal(shard.frames["params"], frames["params"])
    assert np.array_equal(shard.n_kept, kept)
    # the unsupervised rule's reader gets the chosen crops
    by_id = distill_train.read_crops_by_identity([tmp_path / "s.h5"])
    assert {k: len(v) for k, v in by_id.items()} == {
        i: int(stored[2 * j] + stored[2 * j + 1]) for j, i in enumerate(["idA", "idB", "idC"])
    }
    # an uncapped shard of the same frames stores every kept crop, and says so
    pairs = zip(shard.video_paths, shard.video_identities, strict=True)
    videos = [{"video": p, "identity": i} for p, i in pairs]
    n = len(frames["video"])
    write_fit_shard(tmp_path / "all.h5", videos, frames, [], {"frames": n}, _fitter())
    assert FitShard.read(tmp_path / "all.h5").crops_per_video is None
    assert FitShard.crop_storage(tmp_path / "all.h5")[0] == int(kept.sum())
    # reruns give the same bytes
    write_fit_shard(
        tmp_path / "again.h5", videos, frames, [], {"frames": n}, _fitter(crops_per_video=cap)
    )
    assert (tmp_path / "again.h5").read_bytes() == (tmp_path / "s.h5").read_bytes()


def test_fit_config_reads_the_crop_cap():
    from vox3d.config import default
    from vox3d.fitting.fit import FitConfig

    assert FitConfig().crops_per_video == default("fit.crops_per_video")
    assert FitConfig.from_config({}).crops_per_video == default("fit.crops_per_video")
    assert FitConfig.from_config({"fit": {"crops_per_video": 3}}).crops_per_video == 3
    assert FitConfig.from_config({"fit": {"crops_per_video": None}}).crops_per_video is None


def test_a_shard_without_crops_says_how_to_get_them(tmp_path):
    _shard(tmp_path / "s.h5", np.random.default_rng(1), ["idA"], crops=False)
    shard = FitShard.read(tmp_path / "s.h5")
    assert not shard.has_crops
    with pytest.raises(FitShardError, match=r"s\.h5.*keep_crops"):
        shard.crops()
    assert FitShard.crop_storage(tmp_path / "s.h5") == (0, 0)


def test_jpeg_crops_stay_close_to_the_regressor_input():
    img = _face(np.random.default_rng(2), (1.0, 0.9, 0.8))
    back = decode_crop(encode_crop(img))
    assert back.shape == img.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img).mean() < 3.0
    assert np.array_equal(encode_crop(img), encode_crop(img))  # deterministic bytes


def test_kept_crops_cuts_what_the_fit_regressed():
    from vox3d.face.crop import crop_image
    from vox3d.fitting.fit_loop import kept_crops

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (90, 100, 3), dtype=np.uint8) for _ in range(3)]
    roi = np.array([[10, 5, 70, 65], [0, 0, 50, 50], [20, 20, 80, 80]], np.float64)
    keep = np.array([True, False, True])
    out = kept_crops(frames, roi, keep)
    assert out[1] is None
    for i in (0, 2):
        ref = crop_image(np.ascontiguousarray(frames[i][..., ::-1]), roi[i])
        assert np.array_equal(decode_crop(out[i]), decode_crop(encode_crop(ref)))


def test_keep_crops_auto_follows_the_train_mode():
    from vox3d.fitting.fit import crops_needed

    assert not crops_needed({"train": {"mode": "supervised"}, "fit": {"keep_crops": "auto"}})
    assert crops_needed({"train": {"mode": "both"}, "fit": {"keep_crops": "auto"}})
    assert crops_needed({"train": {"mode": "unsupervised"}, "fit": {}})
    assert crops_needed({"train": {"mode": "supervised"}, "fit": {"keep_crops": True}})
    assert not crops_needed({"train": {"mode": "both"}, "fit": {"keep_crops": False}})


# ------------------------------------------------------------------ networks and losses


def test_generator_and_trunk_shapes():
    g = distill.Generator(64, (32, 16, 8, 8, 4))
    img = g(torch.nn.functional.normalize(torch.randn(5, 64), dim=1))
    assert img.shape == (5, 3, 64, 64) and img.abs().max() <= 1.0
    t = distill.FaceTrunk(7, (4, 8, 8, 16, 16))
    rf, cls = t(img)
    assert rf.shape == (5,) and cls.shape == (5, 7)
    x = distill.to_regressor_input(img)
    assert x.shape == (5, 3, 120, 120)
    # pixel p = (x + 1) 127.5 normalised as (p - 127.5) / 128, the regressor's convention
    white = distill.to_regressor_input(torch.ones(1, 3, 64, 64))
    assert torch.allclose(white, torch.full_like(white, 127.5 / 128))


def test_image_round_trip():
    u8 = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert np.array_equal(distill.tensor_to_images(distill.images_to_tensor(u8)), u8)


def test_pkt_loss_is_zero_for_the_same_geometry_only():
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=rng)
    assert float(distill.pkt_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    # invariant to the features' scale and to a rotation of the feature space
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=rng))
    assert float(distill.pkt_loss(3.0 * a @ q, a)) == pytest.approx(0.0, abs=1e-6)
    # different similarity structure: positive; a shuffled teacher: larger than a close one
    b = a + 0.3 * torch.randn(16, 32, generator=rng)
    c = a[torch.randperm(16, generator=rng)] + torch.randn(16, 32, generator=rng)
    assert 0 < float(distill.pkt_loss(b, a)) < float(distill.pkt_loss(c, a))


def test_triplet_loss_skips_same_speaker_negatives():
    a = torch.tensor([[0.0, 0.0], [5.0, 0.0], [5.0, 0.1]])
    p = a.clone()
    # item 1's negative is item 2's positive, the same speaker: left out; the others are far
    lab = torch.tensor([0, 1, 1])
    assert float(distill.triplet_loss(a, p, lab)) == pytest.approx(0.0)
    # all of one speaker: no triplet, zero (and differentiable)
    z = distill.triplet_loss(a.requires_grad_(), p, torch.zeros(3, dtype=torch.long))
    z.backward()
    assert float(z.detach()) == 0.0
    # a negative closer than the positive costs the margin and more
    a2 = torch.tensor([[0.0, 0.0], [0.1, 0.0]])
    p2 = torch.tensor([[2.0, 0.0], [0.1, 0.0]])
    assert float(distill.triplet_loss(a2, p2, torch.tensor([0, 1]))) > distill.TRIPLET_MARGIN


def test_distill_presets_and_bad_settings():
    assert distill.distill_config({}).steps == 600
    paper = distill.distill_config({"preset": "paper"})
    assert paper.steps == 50000 and tuple(paper.generator_channels) == (1024, 512, 256, 128, 64)
    assert distill.distill_config({"steps": 7, "batch_size": None}).steps == 7
    with pytest.raises(ValueError, match="preset"):
        distill.distill_config({"preset": "huge"})
    with pytest.raises(ValueError, match="batch_size"):
        distill.distill_config({"batch_size": 1})


# ------------------------------------------------------------------ a training run, no 3D labels


def _features(path, rng, identities, utts=3, frames=160):
    """A 64-band log-mel feature shard through the stage's writer: each speaker a band
    profile of its own."""
    from vox3d.audio import fbank, features

    kept = []
    for j, ident in enumerate(identities):
        prof = np.sin(np.arange(64) * (j + 1) / 9.0)
        for u in range(utts):
            x = (prof + rng.normal(0, 0.5, (frames, 64))).astype(np.float32)
            f = fbank.UtteranceFeatures(
                x, np.zeros(64, np.float32), np.ones(64, np.float32), frames
            )
            kept.append(features.Utterance(f"{ident}/yt/{u:05d}.mp4", ident, f))
    features.write(path, kept, [], fbank.FeatureConfig(), chunk_frames=64)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    pytest.importorskip("cv2")
    tmp = tmp_path_factory.mktemp("distill")
    rng = np.random.default_rng(5)
    ids = [f"id{k:05d}" for k in range(8)]
    (tmp / "fit").mkdir()
    _shard(tmp / "fit" / "shard-00000.h5", rng, ids[:4])
    _shard(tmp / "fit" / "shard-00001.h5", rng, ids[4:])
    (tmp / "features").mkdir()
    _features(tmp / "features" / "shard-00000.h5", rng, ids)
    return tmp, ids


def _settings():
    return {
        "split": "hash",
        "val_fraction": 0.3,
        "voice_encoder": {"steps": 6, "batch_size": 8, "crop_min": 40, "crop_max": 60},
        "unsupervised": {"steps": 4, "batch_size": 4, "checkpoint_every": 2},
    }


def _train(tmp, out, fit_dir):
    from vox3d.config import load_config
    from vox3d.fitting.fit import FitConfig
    from vox3d.voice.speaker import run_pretrain_voice

    out.mkdir(parents=True, exist_ok=True)
    feats = sorted(str(p) for p in (tmp / "features").glob("*.h5"))
    run_pretrain_voice(
        _settings(), feats, None, out / "voice_encoder.pt", out / "enc.csv", progress=False
    )
    fit_cfg = FitConfig.from_config(load_config())
    return distill_train.run_train_unsupervised(
        _settings(), feats, sorted(fit_dir.glob("shard-*.h5")), None, out / "voice_encoder.pt", fit_cfg,
        out / "unsupervised.pt", out / "log.csv", out / "split.tsv", progress=False,
    )  # fmt: skip


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_unsupervised_training_reads_no_3d_label_and_repeats_its_bytes(tiny_inputs, tmp_path):
    tmp, ids = tiny_inputs
    info = _train(tmp, tmp_path / "a", tmp / "fit")
    assert set(info["identities"]).isdisjoint(info["val_identities"])
    assert info["n_face_crops"] > 0 and 0.0 <= info["generated_identity_accuracy"] <= 1.0
    # the same run again: the same bytes (fixed seeds, CPU)
    _train(tmp, tmp_path / "b", tmp / "fit")
    for name in ("voice_encoder.pt", "unsupervised.pt", "log.csv", "split.tsv"):
        assert _sha(tmp_path / "a" / name) == _sha(tmp_path / "b" / name), name
    # every 3D label replaced by noise: the fitted parameters in the fit shards, and an
    # identities.h5 / ground_truth.h5 beside them; the model's bytes do not move
    noisy = tmp_path / "noisy_fit"
    shutil.copytree(tmp / "fit", noisy)
    rng = np.random.default_rng(99)
    for p in noisy.glob("*.h5"):
        with h5py.File(p, "r+") as f:
            f["frames/params"][...] = rng.normal(0, 5, f["frames/params"].shape)
    for name in ("identities.h5", "ground_truth.h5"):
        with h5py.File(noisy / name, "w") as f:
            f["noise"] = rng.normal(size=(8, 40))
    _train(tmp, tmp_path / "c", noisy)
    assert _sha(tmp_path / "a" / "unsupervised.pt") == _sha(tmp_path / "c" / "unsupervised.pt")
    # and the crops do matter: other faces, another model
    other = tmp_path / "other_fit"
    rng2 = np.random.default_rng(7)
    other.mkdir()
    _shard(other / "shard-00000.h5", rng2, ids[:4])
    _shard(other / "shard-00001.h5", rng2, ids[4:])
    _train(tmp, tmp_path / "d", other)
    assert _sha(tmp_path / "a" / "unsupervised.pt") != _sha(tmp_path / "d" / "unsupervised.pt")


def test_unsupervised_model_serves_coefficients(tiny_inputs, tmp_path):
    tmp, _ = tiny_inputs
    _train(tmp, tmp_path, tmp / "fit")
    m = distill.load_unsupervised(tmp_path / "unsupervised.pt")
    x = torch.randn(2, 120, 64)
    faces = m.faces(x)
    assert faces.shape == (2, 3, 64, 64)
    params = m.params(x)
    assert params.shape == (2, 62) and torch.isfinite(params).all()
    coef = m.coefficients(x)
    assert coef.shape == (2, 40) and torch.isfinite(coef).all()
    # calibrated: the posterior mean of the teacher's raw identity outputs
    from vox3d.fitting.identities import calibrated_gain

    cal = m.meta["calibration"]
    assert cal is not None
    raw = params[:, 12:52].double().numpy()
    want = (raw - np.asarray(cal["bias"])) * calibrated_gain(cal, 1)
    assert np.allclose(coef.numpy(), want, atol=1e-5)


def test_missing_crops_or_teacher_fail_clearly(tiny_inputs, tmp_path):
    tmp, ids = tiny_inputs
    bare = tmp_path / "bare"
    bare.mkdir()
    _shard(bare / "shard-00000.h5", np.random.default_rng(8), ids, crops=False)
    with pytest.raises(FitShardError, match="keep_crops"):
        _train(tmp, tmp_path / "x", bare)
    from vox3d.fitting.fit import FitConfig

    with pytest.raises(FileNotFoundError, match="teacher"):
        distill.load_teacher(FitConfig(ict_regressor=str(tmp_path / "nope.pth")))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    from vox3d.safeload import BadModelFileError

    with pytest.raises(BadModelFileError, match="junk"):
        distill.load_unsupervised(tmp_path / "junk.pt")


def test_speaker_pretraining_learns_voices_not_labels():
    from vox3d.voice.speaker import SpeakerConfig, pretrain_encoder, utterance_accuracy
    from vox3d.voice.train_data import UtteranceBank

    rng = np.random.default_rng(11)
    n = 6
    prof = [np.sin(np.arange(64) * (j + 1) / 9.0) for j in range(n)]

    def utt(j):
        return (prof[j] + rng.normal(0, 0.7, (150, 64))).astype(np.float32)

    train = [(utt(j), j) for j in range(n) for _ in range(3)]
    held = [(utt(j), j) for j in range(n)]
    cfg = SpeakerConfig(steps=30, batch_size=12, crop_min=40, crop_max=80)
    model, rows = pretrain_encoder(
        UtteranceBank([f for f, _ in train], [j for _, j in train]), cfg, False
    )
    assert len(rows) == 30 and rows[-1]["loss"] < rows[0]["loss"]
    acc = utterance_accuracy(model, [f for f, _ in held], [j for _, j in held])
    assert acc >= 0.8
    # control: labels shuffled across utterances, no voice-speaker link left to learn
    perm = np.random.default_rng(0).permutation(len(train))
    shuffled = UtteranceBank([train[i][0] for i in perm], [j for _, j in train])
    model_s, _ = pretrain_encoder(shuffled, cfg, False)
    assert utterance_accuracy(model_s, [f for f, _ in held], [j for _, j in held]) < acc


def test_a_killed_unsupervised_training_resumes_to_the_same_bytes(
    tiny_inputs, tmp_path, monkeypatch, capsys
):
    """Interrupted after its step-2 state (checkpoint_every 2), the rerun resumes there and
    ends with the bytes of an uninterrupted run."""
    tmp, _ = tiny_inputs
    _train(tmp, tmp_path / "clean", tmp / "fit")
    real = distill.triplet_loss
    calls = {"n": 0}

    def dies_at_step_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(distill, "triplet_loss", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp, tmp_path / "killed", tmp / "fit")
    assert (tmp_path / "killed" / "unsupervised_state" / "state.pt").is_file()
    assert not (tmp_path / "killed" / "unsupervised.pt").exists()
    monkeypatch.setattr(distill, "triplet_loss", real)
    capsys.readouterr()
    _train(tmp, tmp_path / "killed", tmp / "fit")
    assert "resuming the unsupervised training at step 2" in capsys.readouterr().out
    for name in ("unsupervised.pt", "log.csv"):
        assert _sha(tmp_path / "clean" / name) == _sha(tmp_path / "killed" / name), name
