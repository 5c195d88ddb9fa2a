"""The features stage: bad audio becomes rejects and the shard completes; the HDF5 layout;
CMP's own stored arrays as a feature shard; the real extract -> features path."""

from __future__ import annotations

import filecmp
import shutil
import time

import h5py
import numpy as np
import pytest
import soundfile as sf

from vox3d.audio import fbank, features
from vox3d.audio.featurestore import FeatureStore
from vox3d.io import read_tsv
from vox3d.paths import CMP_DIR, DATA_ROOT

REF = CMP_DIR / "reference_fbank"
pytestmark = pytest.mark.shared_data(REF)


def assert_like_reference(got: np.ndarray, ref: np.ndarray) -> None:
    """The workflow's features (default ``features.precision: float32``) against the
    original's stored array: same shape and dtype, within 1e-4 (measured <= 3.3e-5;
    tests/test_fbank.py checks that float64 is bit-identical)."""
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.abs(got - ref).max() <= 1e-4


def _speech(name: str = "pcavs00086_00086") -> np.ndarray:
    a, sr = sf.read(REF / f"{name}.wav", dtype="float32")
    assert sr == 16000
    return a


def _bad_items() -> list[tuple[str, str, np.ndarray, str | None]]:
    """(video, identity, audio, expected reject reason prefix or None = kept)."""
    speech = _speech()
    short = np.zeros(3 * 16000, np.float32)
    short[16000 : 16000 + 4800] = speech[20000:24800]  # 0.3 s of speech in silence
    rng = np.random.default_rng(0)
    return [
        ("good/v/1.mp4", "good", speech, None),
        ("sil/v/1.mp4", "sil", np.zeros(48000, np.float32), "silence"),
        ("hiss/v/1.mp4", "hiss", (rng.standard_normal(48000) * 1e-4).astype(np.float32), "silence"),
        ("short/v/1.mp4", "short", short, "too short after voice activity detection"),
        ("clip/v/1.mp4", "clip", np.clip(speech * 30, -1, 1), "clipped"),
        ("dc/v/1.mp4", "dc", speech + 0.2, None),
        ("empty/v/1.mp4", "empty", np.zeros(0, np.float32), "empty audio"),
        ("nan/v/1.mp4", "nan", np.full(16000, np.nan, np.float32), "audio has non-finite"),
    ]


def test_bad_audio_rejected_with_reasons_and_shard_completes(tmp_path):
    items = _bad_items()
    cfg = fbank.FeatureConfig()
    kept, rejects = features.compute([i[:3] for i in items], cfg, progress=False)
    reasons = {r["path"]: r["reason"] for r in rejects}
    for video, _, _, expect in items:
        if expect is None:
            assert video not in reasons
        else:
            assert reasons[video].startswith(expect), reasons[video]
    assert all(r["stage"] == "features" for r in rejects)
    assert [u.video for u in kept] == ["good/v/1.mp4", "dc/v/1.mp4"]
    out = tmp_path / "f.h5"
    features.write(out, kept, rejects, cfg, source="test")
    assert features.read_rejects(out) == rejects
    tsv = tmp_path / "rejects.tsv"
    assert features.collect_rejects([out], tsv) == 6
    rows = read_tsv(tsv)
    assert list(rows[0]) == ["path", "stage", "reason"] and len(rows) == 6


def test_dc_offset_removed_and_features_close_to_clean():
    speech = _speech()
    clean = fbank.utterance_features(speech)
    dc = fbank.utterance_features(speech + 0.2)
    assert dc.dc_offset == pytest.approx(0.2, abs=1e-3)
    assert any("DC offset" in n for n in dc.notes)
    assert dc.voiced_samples == clean.voiced_samples
    diff = np.abs(dc.frames - clean.frames)
    # equal except frames of digital silence (log floor), where a 1-2 LSB residue shows
    assert np.median(diff) < 0.02
    corr = np.corrcoef(dc.frames.ravel(), clean.frames.ravel())[0, 1]
    assert corr > 0.99
    raw = fbank.utterance_features(speech + 0.2, cfg=fbank.FeatureConfig(max_dc=1.0))
    assert not raw.notes
    raw_corr = np.corrcoef(raw.frames.ravel(), clean.frames.ravel())[0, 1]
    assert raw_corr < corr


def test_other_rates_and_stereo_are_resampled():
    speech = _speech().astype(np.float64)
    import soxr

    up = soxr.resample(speech, 16000, 44100, quality="HQ")
    stereo = np.stack([up, up], axis=1)
    kept, rejects = features.compute(
        [("a/b/c.wav", "a", stereo)], fbank.FeatureConfig(), sr=44100, progress=False
    )
    assert not rejects
    f = kept[0].feats
    clean = fbank.utterance_features(speech)
    assert "resampled from 44100 Hz" in f.notes
    # resampled twice: same speech, nearly the same voiced length and features
    assert abs(f.voiced_samples - clean.voiced_samples) <= 0.05 * clean.voiced_samples
    n = min(len(f.frames), len(clean.frames))
    corr = np.corrcoef(f.frames[: n // 2].ravel(), clean.frames[: n // 2].ravel())[0, 1]
    assert corr > 0.9


def test_shard_layout_attributes_float16_and_same_bytes(tmp_path):
    names = ["pcavs00086_00086", "pcavs00373_00373"]
    items = [
        (f"{n.split('_')[0]}/yt/{n.split('_')[1]}.mp4", n.split("_")[0], _speech(n)) for n in names
    ]
    cfg = fbank.FeatureConfig()
    kept, rejects = features.compute(items, cfg, progress=False)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    features.write(a, kept, rejects, cfg, source="x")
    time.sleep(1.1)
    features.write(b, kept, rejects, cfg, source="x")
    assert filecmp.cmp(a, b, shallow=False)
    with h5py.File(a) as h:
        assert h["frames"].shape == (477 + 461, 64)
        assert h["frames"].chunks == (features.CHUNK_FRAMES, 64)
        assert h["frames"].compression == features.COMPRESSION
        for k in (
            "n_mels",
            "f_min",
            "f_max",
            "n_fft",
            "win_length",
            "hop_length",
            "preemphasis",
            "vad_aggressiveness",
            "log_floor",
            "norm_eps",
            "kind",
            "version_numpy",
            "version_webrtcvad_wheels",
            "version_vox3d",
        ):
            assert k in h.attrs, k
        assert h.attrs["format"] == fbank.FORMAT and not h.attrs["repeated"]
        assert list(h["index/offset"][()]) == [0, 477] and list(h["index/length"][()]) == [477, 461]
        assert h["index/utterance"][0].decode() == "pcavs00086/yt/00086"
    ix = features.read_index(a)
    assert ix["identity"] == ["pcavs00086", "pcavs00373"]
    for i, n in enumerate(names):
        got = features.read_utterance(a, i, repeat=True)
        assert_like_reference(got, np.load(REF / f"{n}.npy"))
    # float16 storage: error at most half a float16 ulp of the largest value
    c = tmp_path / "c.h5"
    features.write(c, kept, rejects, fbank.FeatureConfig(float16=True))
    with h5py.File(c) as h:
        assert h["frames"].dtype == np.float16
    x32 = features.read_utterance(a, 0)
    x16 = features.read_utterance(c, 0)
    err = np.abs(x16 - x32)
    assert err.max() <= np.abs(x32).max() * 2.0**-11 + 1e-7  # half a float16 ulp
    assert err.max() < 0.01


@pytest.mark.parametrize("comp", ["none", "lzf", "gzip"])
def test_compression_setting(tmp_path, comp):
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    f = fbank.UtteranceFeatures(x, np.zeros(64, np.float32), np.ones(64, np.float32), 300)
    cfg = fbank.FeatureConfig(compression=comp)
    p = tmp_path / "c.h5"
    features.write(p, [features.Utterance("a/b/c.mp4", "a", f)], [], cfg)
    with h5py.File(p) as h:
        assert h["frames"].compression == (None if comp == "none" else comp)
        assert h.attrs["compression"].startswith(comp)
    assert np.array_equal(features.read_utterance(p, 0), x)
    with pytest.raises(ValueError, match="compression"):
        fbank.FeatureConfig(compression="zstd")


def test_cmp_npy_folder_round_trips_through_featurestore(tmp_path):
    root = CMP_DIR / "preprocessed_MFCC"
    out = tmp_path / "cmp.h5"
    assert features.features_from_cmp_npy(root, out) == 15
    ix = features.read_index(out)
    lengths = dict(zip(ix["utterance"], ix["length"], strict=True))
    # two stored arrays are longer than 1000 frames (kept whole); the rest were tiled
    assert lengths["rand_id00004/_2wZVvsQYFg/00002"] == 1751
    assert lengths["rand_id00005/0nH78dDh0N0/00003"] == 1269
    assert sorted(lengths.values())[:13] == sorted(v for v in lengths.values() if v < 1000)
    assert sum(v < 1000 for v in lengths.values()) == 13
    store = FeatureStore([out], mode="eval")
    assert store.identities == [f"rand_id0000{i}" for i in range(1, 6)]
    for i, u in enumerate(store.utterances):
        x, y = store[i]
        assert np.array_equal(x.numpy(), np.load(root / f"{u}.npy"))
        assert store.identities[y] == u.split("/")[0]
    train = FeatureStore([out], mode="train", items_per_epoch=8, batch_size=4, seed=3)
    x, y = train[0]
    assert 300 <= x.shape[0] <= 800 and x.shape[1] == 64


def test_untile_detects_the_period():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((333, 4)).astype(np.float32)
    assert np.array_equal(features.untile(fbank.repeat_frames(base)), base)
    real = rng.standard_normal((1000, 4)).astype(np.float32)
    assert features.untile(real) is real


def _write_extract_fixture(path, items):
    """An extract shard in vox3d.media.extract_shard's layout (audio + index + empty frames/rejects)."""
    from vox3d.media import extract_shard

    s = h5py.string_dtype("utf-8")
    audio = np.concatenate([a for _, _, a in items]).astype(np.float32)
    lens = np.array([len(a) for _, _, a in items], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    cols = {
        "video": [v for v, _, _ in items],
        "identity": [i for _, i, _ in items],
        "duration_s": lens / 16000.0,
        "audio_offset": offs,
        "audio_length": lens,
        "frame_offset": np.zeros(len(items), np.int64),
        "frame_count": np.zeros(len(items), np.int64),
        "height": np.zeros(len(items), np.int64),
        "width": np.zeros(len(items), np.int64),
        "av_offset": np.zeros(len(items)),
    }
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "format": extract_shard.FORMAT,
                "format_version": extract_shard.FORMAT_VERSION,
                "sample_rate": 16000,
                "frame_rate": 5.0,
                "decoder": "pyav",
            }
        )
        f.create_dataset("audio", data=audio)
        f.create_dataset("frame_times", data=np.zeros(0))
        f.create_group("frames")
        for k, dt in extract_shard.INDEX.items():
            f.create_dataset(k, data=np.array(cols[k], dtype=s if dt == "str" else dt))
        g = f.create_group("rejects")
        for k in ("path", "code", "reason"):
            g.create_dataset(k, data=np.array([], dtype=s))


def test_features_shard_from_extract_shard(tmp_path):
    items = [i[:3] for i in _bad_items() if i[0] not in ("empty/v/1.mp4",)]
    ex = tmp_path / "extract" / "shard-00000.h5"
    ex.parent.mkdir()
    _write_extract_fixture(ex, items)
    out = tmp_path / "features" / "shard-00000.h5"
    res = features.features_shard(ex, out, progress=False)
    assert res == {"utterances": 2, "rejected": 5}
    ix = features.read_index(out)
    assert ix["video"] == ["good/v/1.mp4", "dc/v/1.mp4"]
    assert ix["attrs"]["source"] == "shard-00000.h5"
    ref = np.load(REF / "pcavs00086_00086.npy")
    assert_like_reference(features.read_utterance(out, 0, repeat=True), ref)
    # two worker processes: same file, byte for byte
    out2 = tmp_path / "features" / "two.h5"
    assert features.features_shard(ex, out2, progress=False, workers=2) == res
    assert filecmp.cmp(out, out2, shallow=False)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program")
def test_real_clips_through_manifest_extract_features(tmp_path):
    """Real VoxCeleb2 clips through the real manifest and extract stages (ffmpeg decoder).
    The extract stage cuts the AAC end padding that `ffmpeg -i x.mp4 x.wav` keeps, so only
    the clip whose declared duration covers every decoded sample (pcavs00373) is bit-equal
    to the reference; the others keep CMP's statistics."""
    from vox3d.media import extract
    from vox3d.media.manifest import build_manifest, write_manifest

    rows = build_manifest(DATA_ROOT / "real" / "voxceleb", None, "pyav", 1)
    write_manifest(rows, tmp_path / "manifest.tsv", tmp_path / "shards", 64)
    ex = tmp_path / "extract.h5"
    extract.extract_shard(
        tmp_path / "shards" / "shard-00000.tsv",
        DATA_ROOT / "real" / "voxceleb",
        ex,
        decoder="ffmpeg",
        progress=False,
    )
    out = tmp_path / "features.h5"
    assert features.features_shard(ex, out, progress=False) == {"utterances": 10, "rejected": 0}
    store = FeatureStore([out], mode="eval")
    i = store.utterances.index("pcavs00373/clip/00373")
    assert_like_reference(store[i][0].numpy(), np.load(REF / "pcavs00373_00373.npy"))
    for j in range(len(store)):
        x = store[j][0].numpy()
        assert x.shape[0] >= 1000 and 0.9 < x.std(0).min() and np.abs(x.mean(0)).max() < 0.15


def test_stage_equals_per_utterance_features(tmp_path):
    """The stage (bulk audio reads, one contiguous frames write, any compression) stores
    exactly what the per-utterance computation gives: equal arrays, mean, std."""
    names = ["pcavs00086_00086", "pcavs00373_00373", "id06811_00216"]
    items = [
        (f"{n.split('_')[0]}/yt/{k}.mp4", n.split("_")[0], _speech(n)) for k, n in enumerate(names)
    ]
    items.append(("sil/yt/9.mp4", "sil", np.zeros(16000, np.float32)))  # rejected in between
    items.append(("again/yt/3.mp4", "again", _speech(names[0])[5000:]))
    ex = tmp_path / "ex.h5"
    _write_extract_fixture(ex, items)
    want = {v: fbank.utterance_features(a) for v, _, a in items if v != "sil/yt/9.mp4"}
    for comp in ("none", "gzip", "lzf"):
        out = tmp_path / f"f_{comp}.h5"
        res = features.features_shard(
            ex, out, fbank.FeatureConfig(compression=comp), progress=False
        )
        assert res == {"utterances": 4, "rejected": 1}
        ix = features.read_index(out)
        assert ix["video"] == list(want)
        with h5py.File(out) as h:
            for i, v in enumerate(ix["video"]):
                assert np.array_equal(features.read_utterance(out, i), want[v].frames)
                assert np.array_equal(h["index/mean"][i], want[v].mean)
                assert np.array_equal(h["index/std"][i], want[v].std)
                assert h["index/voiced_samples"][i] == want[v].voiced_samples


def test_audio_blocks_handle_gaps_and_odd_layouts(tmp_path):
    """Bulk audio reads give every video's samples once, in order, also when the audio of
    consecutive videos is not contiguous in the shard or a read is capped."""
    from vox3d.media import extract_shard

    rng = np.random.default_rng(0)
    items = [
        (f"v{k}/y/0.mp4", f"v{k}", rng.standard_normal(n).astype(np.float32))
        for k, n in enumerate([5, 0, 7, 3])
    ]
    ex = tmp_path / "ex.h5"
    _write_extract_fixture(ex, items)
    with h5py.File(ex, "r+") as f:  # move video 2's audio behind a gap
        audio = f["audio"][()]
        offs = f["audio_offset"][()]
        new = np.concatenate([audio[:5], np.full(4, 9.0, np.float32), audio[5:]])
        del f["audio"]
        f.create_dataset("audio", data=new)
        offs[2:] += 4
        f["audio_offset"][...] = offs
    for cap in (extract_shard.AUDIO_READ_SAMPLES, 6):
        with extract_shard.ExtractShard(ex) as sh:
            got = list(sh.audio_blocks(cap))
        assert [k for k, _ in got] == [0, 1, 2, 3]
        for (_, _, a), (_, b) in zip(items, got, strict=True):
            assert np.array_equal(a, b)
