"""Tests of the synthetic corpus (vox3d.synthetic.synth): format, ground truth against the pixels and
the audio, determinism.  The corpus tests build a tiny corpus (3 identities, 1 s clips)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import av
import cv2
import h5py
import librosa
import numpy as np
import pytest

from vox3d import paths
from vox3d.synthetic import synth, synth_card, synth_config, synth_render, synth_rig
from vox3d.synthetic import voice_synth as vs

TINY = dict(identities=3, videos_per_identity=1, utterances_per_video=2, seconds=1.0, seed=7)


# --------------------------------------------------------------------------- fast tests


def test_names_split_a_to_e_in_the_voxceleb1_proportion():
    genders = ["m", "f"] * 20
    names = synth_rig.draw_names(40, genders, seed=0)
    assert names == synth_rig.draw_names(40, genders, seed=0)
    assert len(set(names)) == 40
    assert sum(n[0] <= "E" for n in names) == 10  # 40 * 309 / 1251 = 9.9
    assert all(re.fullmatch(r"[A-Z][a-z]+_[A-Z][a-z]+", n) for n in names)
    assert sum(n[0] <= "E" for n in synth_rig.draw_names(3, ["m", "f", "m"], seed=1)) == 1
    assert synth_rig.draw_names(40, genders, seed=1) != names


def test_frame_pose_places_and_scales_the_anchor():
    anchor = np.array([0.5, -2.0, 10.0])
    P = synth_render.frame_pose(np.array([25.0, -10.0, 5.0]), 8.0, np.array([100.0, 120.0]), anchor)
    pts = np.array([anchor, anchor + [1.0, 0, 0], anchor + [0, 1.0, 0]])
    img = synth_render.project(pts, P)
    assert img[0, :2] == pytest.approx([100.0, 120.0], abs=1e-3)
    # A unit model vector projects to at most `scale` pixels (orthographic).
    from vox3d.params import pose_to_srt, rotation_to_euler

    s, R, _ = pose_to_srt(P)
    assert s * synth_config.FRAME_SIZE / 120 == pytest.approx(8.0)
    assert np.degrees(rotation_to_euler(R)) == pytest.approx([25.0, -10.0, 5.0])
    # Model y up -> image y down, for an upright head.
    P0 = synth_render.frame_pose(np.zeros(3), 8.0, np.array([100.0, 120.0]), anchor)
    img0 = synth_render.project(pts, P0)
    assert img0[2, 1] - img0[0, 1] == pytest.approx(-8.0, abs=1e-3)


def _spec(seed: int) -> synth_render.VideoSpec:
    cfg = synth_config.SynthConfig(seed=seed)
    ident = type("I", (), {"index": 0})()
    return synth_render.draw_video(cfg, ident, 0)


def test_background_is_textured_and_deterministic():
    a, b, c = (
        synth_render.background(_spec(0)),
        synth_render.background(_spec(0)),
        synth_render.background(_spec(1)),
    )
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    grey = a.astype(np.float64).mean(2)
    # Not flat: texture at small scale (local gradients) and at large scale.
    assert np.abs(np.diff(grey, axis=1)).mean() > 0.3
    assert grey.std() > 8


def test_meta_csv_has_voxceleb1_format(tmp_path):
    ref = paths.CMP_DIR / "vox1_meta.csv"
    idents = [
        synth_rig.Identity(
            i,
            f"id{90001 + i}",
            f"Ann_Lee{i}",
            "f",
            "USA",
            "dev",
            np.zeros(2),
            np.zeros(2),
            None,
            np.zeros(3),
            np.zeros(3),
            0.0,
            5.0,
            np.zeros(3),
            0,
            1.0,
        )  # fmt: skip
        for i in range(2)
    ]
    synth_card.write_meta_csv(tmp_path / "m.csv", idents)
    rows = list(csv.reader(open(tmp_path / "m.csv", encoding="utf-8"), delimiter="\t"))
    if ref.is_file():
        ref_header = next(csv.reader(open(ref, encoding="utf-8"), delimiter="\t"))
        assert rows[0] == ref_header
    assert rows[1] == ["id90001", "Ann_Lee0", "f", "USA", "dev"]


def test_cli_rejects_bad_sizes(capsys):
    assert synth.cli(["--identities", "0", "--out", "/nonexistent/x"]) == 2
    assert "identities" in capsys.readouterr().err


# --------------------------------------------------------------------------- corpus tests


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_a")
    synth.build_corpus(synth_config.SynthConfig(**TINY), out, threads=1, progress=False)
    return out


def _clips(root: Path) -> list[Path]:
    return sorted((root / "videos").rglob("*.mp4"))


@pytest.mark.slow
def test_layout_meta_and_card(corpus):
    clips = _clips(corpus)
    assert len(clips) == 3 * 1 * 2
    for c in clips:
        rel = c.relative_to(corpus / "videos").parts
        assert re.fullmatch(r"id9\d{4}", rel[0])
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", rel[1])
        assert re.fullmatch(r"\d{5}\.mp4", rel[2])
    rows = list(csv.DictReader(open(corpus / "vox1_meta.csv"), delimiter="\t"))
    assert [r["VoxCeleb1 ID"] for r in rows] == ["id90001", "id90002", "id90003"]
    assert all(r["Gender"] in ("m", "f") and r["Set"] in ("dev", "test") for r in rows)
    card = (corpus / "README.md").read_text()
    assert "Voice -> shape ceiling" in card and "R^2" in card


@pytest.mark.slow
def test_clip_decodes_with_the_declared_format(corpus):
    for path in _clips(corpus)[:2]:
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            a = c.streams.audio[0]
            assert v.codec_context.name == "h264"
            assert v.codec_context.pix_fmt == "yuv420p"
            assert (v.codec_context.width, v.codec_context.height) == (224, 224)
            assert v.average_rate == 25
            assert a.codec_context.name == "aac"
            assert a.codec_context.sample_rate == 16000
            assert a.codec_context.channels == 1
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 25
        with av.open(str(path)) as c:
            audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
        assert abs(len(audio) - 16000) <= 1024  # AAC frame granularity


def _gt_config(f) -> synth_config.SynthConfig:
    return synth_config.SynthConfig(**json.loads(f.attrs["config"]))


@pytest.mark.slow
def test_ground_truth_layout(corpus):
    with h5py.File(corpus / "ground_truth.h5", "r") as f:
        n_fr = f["utterances/n_frames"][:]
        T = int(n_fr.sum())
        assert T == 6 * 25
        assert f["frames/pose"].shape == (T, 12)
        assert f["frames/euler_deg"].shape == (T, 3)
        assert f["frames/exp"].shape == (T, f.attrs["n_exp"])
        assert f["identities/id_coef"].shape == (3, f.attrs["n_id"])
        assert f["identities/voice"].shape == (3, len(vs.VOICE_PARAM_NAMES))
        assert json.loads(f.attrs["exp_names"])[0] == "jawOpen"
        eul = f["frames/euler_deg"][:]
        assert np.abs(eul[:, 1]).max() <= 20.01 and np.abs(eul[:, 2]).max() <= 10.01
        hard = f["frames/hard"][:]
        assert np.all(np.abs(eul[hard & synth_config.HARD_PROFILE == 0, 0]) <= 60.01)
        # Lip sync: the jaw follows the voicing of the audio.
        jaw = f["frames/exp"][:, 0]
        voicing = f["frames/voicing"][:]
        assert np.corrcoef(jaw, voicing)[0, 1] > 0.5
        paths_ = [p.decode() for p in f["utterances/path"][:]]
        assert paths_ == [str(p.relative_to(corpus / "videos")) for p in _clips(corpus)]
        assert json.loads(f.attrs["voice_ceiling"])["r2_vertex"] > 0


def test_ground_truth_tables_read_what_the_generator_wrote(corpus):
    """vox3d.synthetic.ground_truth.read_tables (the benches' reader of per-frame truth): the stored
    arrays and dtypes, strings decoded, attributes; a missing dataset fails naming the file."""
    from vox3d.synthetic.ground_truth import GroundTruthError, read_tables

    gt = corpus / "ground_truth.h5"
    attrs, t = read_tables(gt, {"frames": ("pose", "exp"), "utterances": ("path", "n_frames")})
    with h5py.File(gt, "r") as f:
        for group, name in (("frames", "pose"), ("frames", "exp"), ("utterances", "n_frames")):
            a = f[f"{group}/{name}"][()]
            assert t[group][name].dtype == a.dtype and np.array_equal(t[group][name], a)
        assert list(t["utterances"]["path"]) == [p.decode() for p in f["utterances/path"][()]]
        assert int(attrs["n_id"]) == int(f.attrs["n_id"])
    assert json.loads(attrs["exp_names"])[0] == "jawOpen"
    with pytest.raises(GroundTruthError, match="ground_truth.h5: no dataset frames/nope"):
        read_tables(gt, {"frames": ("nope",)})


def _segment(changed: np.ndarray) -> np.ndarray:
    """Foreground from the pixels that differ from the background: opened (3x3) against
    codec noise, then holes filled (skin that happens to match the background colour)."""
    m = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    pad = np.pad(1 - m, 1, constant_values=1)
    cv2.floodFill(pad, None, (0, 0), 2)  # the background, reached from the border
    return pad[1:-1, 1:-1] != 2


@pytest.mark.slow
def test_rerendered_ground_truth_reproduces_the_face_mask(corpus):
    """Render the stored shape, expression and pose to a mask and compare it with the face
    segmented from the decoded video against the background regenerated from the seed."""
    with h5py.File(corpus / "ground_truth.h5", "r") as f:
        cfg = _gt_config(f)
        rig = synth_rig.load_rig(cfg)
        idents = synth_rig.draw_identities(cfg, rig)
        U = f["utterances"]
        ious = []
        for k in range(len(U["path"])):
            i, vi = int(U["identity"][k]), int(U["video"][k])
            off, n = int(U["frame_offset"][k]), int(U["n_frames"][k])
            spec = synth_render.draw_video(cfg, idents[i], vi % cfg.videos_per_identity)
            assert spec.youtube_id == f["videos/youtube_id"][vi].decode()
            assert spec.background_seed == int(f["videos/background_seed"][vi])
            bg = synth_render.background(spec).astype(np.int16)
            path = corpus / "videos" / U["path"][k].decode()
            with av.open(str(path)) as c:
                frames = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
            for t in range(0, n, 5):
                if f["frames/blur_px"][off + t] > 0:
                    continue
                verts = rig.model.vertices(f["identities/id_coef"][i], f["frames/exp"][off + t])
                img_v = synth_render.project(verts, f["frames/pose"][off + t].reshape(3, 4))
                gt = synth_render.face_mask(rig, img_v)
                diff = np.abs(frames[t].astype(np.int16) - bg).max(axis=2)
                seg = _segment(diff > 14)
                ious.append((gt & seg).sum() / max((gt | seg).sum(), 1))
                assert gt.sum() > 500
    assert len(ious) >= 12
    assert min(ious) >= 0.95, ious


@pytest.mark.slow
def test_f0_of_the_decoded_audio_matches_ground_truth(corpus):
    errs, n_voiced = [], 0
    with h5py.File(corpus / "ground_truth.h5", "r") as f:
        U = f["utterances"]
        for k in range(len(U["path"])):
            path = corpus / "videos" / U["path"][k].decode()
            with av.open(str(path)) as c:
                audio = np.concatenate(
                    [fr.to_ndarray().reshape(-1) for fr in c.decode(audio=0)]
                ).astype(np.float32)
            o, m = int(U["f0_offset"][k]), int(U["n_f0"][k])
            gt = f["audio/f0_hz"][o : o + m]
            est, voiced, _ = librosa.pyin(
                audio, fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=160
            )
            n = min(len(est), len(gt))
            both = voiced[:n] & (gt[:n] > 0)
            errs.append(np.abs(est[:n][both] / gt[:n][both] - 1))
            n_voiced += int(both.sum())
    assert n_voiced >= 60
    assert np.median(np.concatenate(errs)) < 0.05


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_two_builds_are_identical(corpus, tmp_path):
    """Same config and seed -> byte-identical mp4s, ground truth, metadata and card, also
    with a different number of workers."""
    synth.build_corpus(synth_config.SynthConfig(**TINY), tmp_path, threads=2, progress=False)
    a, b = _digest(corpus), _digest(tmp_path)
    assert a.keys() == b.keys()
    assert a == b
    # A different seed changes the corpus.
    other = tmp_path / "other"
    synth.build_corpus(
        synth_config.SynthConfig(**{**TINY, "seed": 8, "identities": 2, "utterances_per_video": 1}),
        other,
        threads=1,
        progress=False,
    )
    with h5py.File(corpus / "ground_truth.h5") as f, h5py.File(other / "ground_truth.h5") as g:
        assert not np.array_equal(f["identities/id_coef"][:2], g["identities/id_coef"][:2])


def test_presets_size_the_corpus_and_keys_override_them():
    """``synthetic.preset``: ``default`` is the embedded corpus, ``paper`` VoxCeleb1-like
    (>= 1,200 identities, >= 8 utterances each, names A-E in VoxCeleb1's proportion); a key
    that is not null overrides the preset; an unknown preset is refused by name."""
    from vox3d.config import load_config

    cfg = synth_config.SynthConfig.from_settings(load_config()["synthetic"])
    assert (cfg.identities, cfg.videos_per_identity, cfg.utterances_per_video) == (300, 1, 2)
    assert cfg.seconds == 2.0 and cfg.seed == 0
    paper = synth_config.SynthConfig.from_settings({"preset": "paper"})
    assert paper.identities >= 1200 and paper.videos_per_identity * paper.utterances_per_video >= 8
    names = synth_rig.draw_names(paper.identities, ["m", "f"] * (paper.identities // 2) + ["m"], 0)
    assert sum(n[0] in "ABCDE" for n in names) == 309  # as VoxCeleb1: 309 of 1,251
    custom = synth_config.SynthConfig.from_settings(
        {"preset": "paper", "identities": 300, "seed": None}
    )
    assert custom.identities == 300 and custom.videos_per_identity == paper.videos_per_identity
    with pytest.raises(ValueError, match="synthetic.preset 'huge'"):
        synth_config.SynthConfig.from_settings({"preset": "huge"})


@pytest.mark.shared_data(paths.ICT_FACEKIT)
def test_default_corpus_holds_out_74_of_300_identities_by_name(tmp_path):
    """The default corpus (config.yaml's preset): 300 identities x 1 video x 2 utterances of
    2 s = 600 clips; 74 names start with A-E (round(300 * 309 / 1251) = 74), and the
    workflow's split of its vox1_meta.csv (``train.split`` auto, as fit_accuracy and train
    read it) holds out exactly those 74 and trains on the other 226, enough for the voice
    link to be learnable (bench/results/cpu_voice_link_scale.txt).  Identities only: no clip
    is rendered."""
    from vox3d.config import default, load_config
    from vox3d.media.split import read_meta, small_data_note, split_identities

    cfg = synth_config.SynthConfig.from_settings(load_config()["synthetic"])
    assert (cfg.identities, cfg.videos_per_identity, cfg.utterances_per_video) == (300, 1, 2)
    assert cfg.identities * cfg.videos_per_identity * cfg.utterances_per_video == 600
    assert cfg.identities * cfg.videos_per_identity * cfg.utterances_per_video * cfg.seconds == 1200
    idents = synth_rig.draw_identities(cfg, synth_rig.load_rig(cfg))
    assert len({p.vox_id for p in idents}) == len({p.name for p in idents}) == 300
    a_e = {p.vox_id for p in idents if p.name[0] in "ABCDE"}
    assert len(a_e) == 74
    synth_card.write_meta_csv(tmp_path / "vox1_meta.csv", idents)
    meta = read_meta(tmp_path / "vox1_meta.csv")
    train, val, how = split_identities(
        [p.vox_id for p in idents], meta, default("train.split"), default("train.val_fraction")
    )
    assert how == "names" and set(val) == a_e
    assert len(val) == 74 and len(train) == 226 and not set(train) & set(val)
    assert small_data_note(len(train), len(val)) == ""
