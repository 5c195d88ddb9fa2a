"""The Voxceleb-3D export (vox3d.report.export) and its dataset card (vox3d.report.card), issue 9 items 4-5.

A small out_dir is built here in the stages' real layouts (extract shards readable by
``ExtractShard``; fit shards pooled by the real ``aggregate_identities``; the stats and
rejects tables written by the stages' own aggregation functions):

* idA (Alice, m): two utterances of one YouTube id -> validation split (name A-E);
* idB (Frank, f): two YouTube ids, one utterance each;
* idC (George, m): every frame failed the fit -> no shape -> not exported (rejects.tsv);
* idD (Hannah, f): two utterances, the second rejected by the features stage; one frame of
  its first video fails the fit.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from vox3d.audio.fbank import FORMAT as FEAT_FORMAT
from vox3d.audio.features import collect_rejects
from vox3d.fitting.fit_tables import write_fit_tables
from vox3d.fitting.identities import aggregate_identities
from vox3d.io import h5_group, h5_new, h5_strings, read_tsv, write_tsv
from vox3d.media.extract import aggregate as extract_aggregate
from vox3d.media.extract_shard import FORMAT as EX_FORMAT
from vox3d.media.extract_shard import FORMAT_VERSION, ExtractShard
from vox3d.media.manifest import MANIFEST_COLUMNS
from vox3d.params import ict_layout
from vox3d.report import card as vcard
from vox3d.report import export as vx
from vox3d.report import export_formats as xf
from vox3d.report import export_layout as xl
from vox3d.report.card_counts import StageTables

N_ID, N_EXP, SR = 6, 2, 16000
META = {
    "idA": ("Alice_Archer", "m", "UK", "dev"),
    "idB": ("Frank_Fox", "f", "USA", "dev"),
    "idC": ("George_Gray", "m", "India", "test"),
    "idD": ("Hannah_Hill", "female", "Peru", "dev"),
}
#: (shard, video path, frames kept of 3); the features stage rejects VOICE_REJECT.
VIDEOS = [
    (0, "idA/ytA1/00001.mp4", 3),
    (0, "idA/ytA1/00002.mp4", 2),
    (0, "idB/ytB1/00001.mp4", 3),
    (0, "idC/ytC1/00001.mp4", 0),
    (1, "idB/ytB2/00001.mp4", 3),
    (1, "idC/ytC1/00002.mp4", 0),
    (1, "idD/ytD1/00001.mp4", 2),
    (1, "idD/ytD1/00002.mp4", 3),
]
VOICE_REJECT = "idD/ytD1/00002.mp4"
EXPORTED = sorted(v[:-4] for _, v, _ in VIDEOS if not v.startswith("idC") and v != VOICE_REJECT)


def _audio(path: str) -> np.ndarray:
    """A deterministic float32 'voice' of 1.0-1.9 s for `path` (not on a 16-bit grid)."""
    seed = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    n = SR + (seed % 10) * 1600 + 7
    return (0.3 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)


def _write_extract(path: Path, videos: list[str]) -> None:
    audio = [_audio(v) for v in videos]
    with h5_new(path) as f:
        f.attrs.update({"format": EX_FORMAT, "format_version": FORMAT_VERSION,
                        "sample_rate": SR, "frame_rate": 5.0, "min_duration": 1.0,
                        "decoder": "pyav", "frame_compression": "gzip",
                        "vox3d_version": "test"})  # fmt: skip
        lengths = np.array([a.size for a in audio], np.int64)
        offs = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        f.create_dataset("audio", data=np.concatenate(audio))
        f.create_dataset("frame_times", data=np.tile([0.0, 0.2, 0.4], len(videos)))
        g = h5_group(f, "frames")
        for i in range(len(videos)):
            g.create_dataset(f"{i:06d}", data=np.zeros((3, 8, 8, 3), np.uint8))
        h5_strings(f, "video", videos)
        h5_strings(f, "identity", [v.split("/")[0] for v in videos])
        for name, data in (("duration_s", lengths / SR), ("audio_offset", offs),
                           ("audio_length", lengths), ("frame_offset", np.arange(len(videos)) * 3),
                           ("frame_count", np.full(len(videos), 3)), ("height", np.full(len(videos), 8)),
                           ("width", np.full(len(videos), 8)), ("av_offset", np.zeros(len(videos)))):  # fmt: skip
            f.create_dataset(name, data=np.asarray(data))
        r = h5_group(f, "rejects")
        for c in ("path", "code", "reason"):
            h5_strings(r, c, [])


def _write_fit(path: Path, videos: list[tuple[str, int]], rng) -> None:
    lay = ict_layout(N_ID, N_EXP)
    true = {i: rng.normal(0, 1, N_ID) for i in META}
    vid, keep, params, reason = [], [], [], []
    for vi, (v, n_kept) in enumerate(videos):
        for j in range(3):
            vid.append(vi)
            keep.append(j < n_kept)
            reason.append(0 if j < n_kept else 1)
            p = np.zeros(lay.n, np.float32)
            p[lay.shape] = true[v.split("/")[0]] + 0.05 * rng.standard_normal(N_ID)
            params.append(p)
    rejects = [(v, "no usable frame: 3 frames rejected (3 no face)") for v, k in videos if k == 0]
    stats = {"videos": len(videos), "videos_rejected": len(rejects), "frames": len(vid),
             "kept": int(np.sum(keep)), "no_face": int(len(vid) - np.sum(keep))}  # fmt: skip
    with h5_new(path) as f:
        g = h5_group(f, "videos")
        h5_strings(g, "path", [v for v, _ in videos])
        h5_strings(g, "identity", [v.split("/")[0] for v, _ in videos])
        g.create_dataset("n_frames", data=np.full(len(videos), 3, np.int64))
        g.create_dataset("n_kept", data=np.array([k for _, k in videos], np.int64))
        g = h5_group(f, "frames")
        g.create_dataset("video", data=np.array(vid, np.int64))
        g.create_dataset("keep", data=np.array(keep, bool))
        g.create_dataset("reason", data=np.array(reason, np.uint8))
        g.create_dataset("params", data=np.stack(params))
        g = h5_group(f, "rejects")
        h5_strings(g, "path", [r[0] for r in rejects])
        h5_strings(g, "reason", [r[1] for r in rejects])
        f.attrs.update({"face_model": "ict", "n_id": N_ID, "n_exp": N_EXP, **lay.as_attrs(),
                        "stats": json.dumps(stats, sort_keys=True)})  # fmt: skip


def _write_features(path: Path, videos: list[str]) -> None:
    kept = [v for v in videos if v != VOICE_REJECT]
    rej = [v for v in videos if v == VOICE_REJECT]
    with h5_new(path) as f:
        f.attrs["format"] = FEAT_FORMAT
        g = h5_group(f, "index")
        h5_strings(g, "video", kept)
        h5_strings(g, "utterance", [v[:-4] for v in kept])
        h5_strings(g, "identity", [v.split("/")[0] for v in kept])
        g.create_dataset("offset", data=np.zeros(len(kept), np.int64))  # no frames stored
        g.create_dataset("length", data=np.zeros(len(kept), np.int64))
        g = h5_group(f, "rejects")
        h5_strings(g, "path", rej)
        h5_strings(g, "reason", ["silence: voice activity detection found no speech"] * len(rej))


def build_out_dir(out: Path) -> Path:
    """The small out_dir described in the module docstring."""
    rng = np.random.default_rng(0)
    rows = []
    for _, v, _ in VIDEOS:
        ident, yt, utt = v.split("/")
        name, g, nat, st = META[ident]
        rows.append({"path": v, "identity": ident, "youtube_id": yt, "utterance": utt[:-4],
                     "name": name, "gender": g, "nationality": nat, "set": st})  # fmt: skip
    write_tsv(out / "manifest.tsv", rows, MANIFEST_COLUMNS)
    for d in ("extract", "fit", "features"):
        (out / d).mkdir(parents=True, exist_ok=True)
    for s in (0, 1):
        vids = [(v, k) for sh, v, k in VIDEOS if sh == s]
        name = f"shard-{s:05d}.h5"
        _write_extract(out / "extract" / name, [v for v, _ in vids])
        _write_fit(out / "fit" / name, vids, rng)
        _write_features(out / "features" / name, [v for v, _ in vids])
    ex = sorted((out / "extract").glob("shard-*.h5"))
    fit = sorted((out / "fit").glob("shard-*.h5"))
    extract_aggregate(ex, out / "extract" / "rejects.tsv", out / "extract" / "stats.tsv")
    aggregate_identities(fit, out / "fit" / "identities.h5")
    write_fit_tables(fit, out / "fit" / "identities.h5", out / "fit" / "rejects.tsv",
                     out / "fit" / "stats.tsv")  # fmt: skip
    collect_rejects(sorted((out / "features").glob("shard-*.h5")), out / "features" / "rejects.tsv")
    return out


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return build_out_dir(tmp_path_factory.mktemp("vox3d_out"))


@pytest.fixture(scope="module")
def exported(out_dir, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("export") / "voxceleb3d"
    vx.export(out_dir, ("lhotse", "hf"), dest)
    return dest


def _identities(out_dir: Path) -> dict[str, dict]:
    with h5py.File(out_dir / "fit" / "identities.h5", "r") as f:
        ids = [x.decode() for x in f["identity"][()]]
        return {
            i: {k: f[k][()][j] for k in ("shape", "spread", "n_frames", "n_videos", "n_outliers")}
            for j, i in enumerate(ids)
        }


def _extracted_audio(out_dir: Path) -> dict[str, np.ndarray]:
    audio = {}
    for p in sorted((out_dir / "extract").glob("shard-*.h5")):
        with ExtractShard(p) as s:
            for i, v in enumerate(s.videos):
                audio[v["video"][:-4]] = s.audio(i)
    return audio


# --------------------------------------------------------------------------------------
# rows, values, split, gender


def test_rows_are_the_index_minus_documented_drops(out_dir, exported):
    import pyarrow.parquet as pq

    t = pq.read_table(exported / "hf" / "utterances.parquet")
    assert t.column_names == list(xl.UTTERANCE_COLUMNS)
    ids = t.column("utterance_id").to_pylist()
    assert ids == EXPORTED  # sorted, idC (no shape) and the voice reject left out
    all_index = set(_extracted_audio(out_dir))
    assert len(all_index) == len(VIDEOS)
    rej = read_tsv(exported / "rejects.tsv")
    assert [r["path"] for r in rej] == ["idC/ytC1/00001.mp4", "idC/ytC1/00002.mp4"]
    assert all(r["stage"] == "export" and "idC has no fitted 3D shape" in r["reason"] for r in rej)
    assert len(ids) == len(all_index) - len(rej) - 1
    idt = pq.read_table(exported / "hf" / "identities.parquet").to_pylist()
    assert [r["identity"] for r in idt] == ["idA", "idB", "idD"]
    assert [r["n_utterances"] for r in idt] == [2, 2, 1]
    assert [r["n_youtube_ids"] for r in idt] == [1, 2, 1]


def test_shapes_equal_identities_h5(out_dir, exported):
    import pyarrow.parquet as pq

    ref = _identities(out_dir)
    assert set(ref) == {"idA", "idB", "idD"}  # aggregate_identities rejected idC
    for r in pq.read_table(exported / "hf" / "utterances.parquet").to_pylist():
        e = ref[r["identity"]]
        np.testing.assert_array_equal(np.asarray(r["shape"], np.float32), e["shape"])
        np.testing.assert_array_equal(np.asarray(r["shape_spread"], np.float32), e["spread"])
        assert (r["shape_n_frames"], r["shape_n_videos"], r["shape_n_outliers"]) == (
            e["n_frames"], e["n_videos"], e["n_outliers"],
        )  # fmt: skip
        assert r["face_model"] == "ict" and len(r["shape"]) == N_ID
    sups = [json.loads(line) for line in gzip.open(exported / xl.LHOTSE_FILES[1], "rt")]
    assert len(sups) == len(EXPORTED)
    for s in sups:
        e = ref[s["speaker"]]
        np.testing.assert_array_equal(np.asarray(s["custom"]["shape"], np.float32), e["shape"])
        np.testing.assert_array_equal(
            np.asarray(s["custom"]["shape_spread"], np.float32), e["spread"]
        )


def test_split_gender_and_fit_counts(exported):
    import pyarrow.parquet as pq

    rows = {
        r["utterance_id"]: r
        for r in pq.read_table(exported / "hf" / "utterances.parquet").to_pylist()
    }
    # names A-E are validation (the paper's split); every identity has a name -> "names"
    assert {r["identity"]: r["split"] for r in rows.values()} == {
        "idA": "val",
        "idB": "train",
        "idD": "train",
    }
    assert {r["identity"]: r["gender"] for r in rows.values()} == {
        "idA": "m",
        "idB": "f",
        "idD": "f",
    }
    kept = {v[:-4]: k for _, v, k in VIDEOS}
    for uid, r in rows.items():
        assert r["frames_kept"] == kept[uid] and r["frames_extracted"] == 3
        assert r["audio_path"] == f"audio/{uid}.wav" and r["source_video"] == uid + ".mp4"
        assert r["youtube_id"] == uid.split("/")[1]
        assert r["num_samples"] == _audio(uid + ".mp4").size
        assert r["duration_s"] == r["num_samples"] / SR and r["sample_rate"] == SR


# --------------------------------------------------------------------------------------
# loading with lhotse and datasets


def test_lhotse_loads_and_audio_equals_extracted(out_dir, exported):
    from lhotse import CutSet, RecordingSet, SupervisionSet

    audio = _extracted_audio(out_dir)
    recs = RecordingSet.from_file(exported / "lhotse" / "recordings.jsonl.gz").with_path_prefix(
        exported
    )
    assert sorted(recs.ids) == EXPORTED
    for rec in recs:
        x = rec.load_audio()
        assert x.shape == (1, audio[rec.id].size) and x.dtype == np.float32
        np.testing.assert_array_equal(x[0], audio[rec.id])  # bit-exact
        assert rec.sampling_rate == SR and rec.num_samples == audio[rec.id].size
    sups = SupervisionSet.from_file(exported / "lhotse" / "supervisions.jsonl.gz")
    by = {s.id: s for s in sups}
    assert by["idA/ytA1/00001"].speaker == "idA" and by["idA/ytA1/00001"].gender == "m"
    assert by["idA/ytA1/00001"].custom["split"] == "val"
    assert by["idB/ytB2/00001"].duration == recs["idB/ytB2/00001"].duration
    cuts = CutSet.from_file(exported / "lhotse" / "cuts.jsonl.gz").with_recording_path_prefix(
        exported
    )
    assert len(cuts) == len(EXPORTED)
    c = cuts[0]
    np.testing.assert_array_equal(c.load_audio()[0], audio[c.recording_id])
    assert c.supervisions[0].speaker == c.recording_id.split("/")[0]
    r2, s2, c2 = xf.load_lhotse(exported)
    assert len(r2) == len(s2) == len(c2) == len(EXPORTED)


def test_datasets_loads_parquet(out_dir, exported, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    ds = load_dataset(
        "parquet",
        data_files={"train": str(exported / "hf" / "utterances.parquet")},
        cache_dir=str(tmp_path / "hf_cache"),
    )["train"]
    assert ds.num_rows == len(EXPORTED) and ds.column_names == list(xl.UTTERANCE_COLUMNS)
    ref = _identities(out_dir)
    for row in ds:
        np.testing.assert_array_equal(
            np.asarray(row["shape"], np.float32), ref[row["identity"]]["shape"]
        )
        assert (exported / row["audio_path"]).is_file()
    ids = load_dataset(
        "parquet",
        data_files={"train": str(exported / "hf" / "identities.parquet")},
        cache_dir=str(tmp_path / "hf_cache"),
    )["train"]
    assert ids["identity"] == ["idA", "idB", "idD"] and ids["name"][0] == "Alice_Archer"


def test_flac_audio_within_24_bit(out_dir, tmp_path):
    from lhotse import RecordingSet

    dest = tmp_path / "flac"
    s = vx.export(out_dir, ("lhotse",), dest, audio_format="flac")
    wav_bytes = sum(4 * a.size + 58 for k, a in _extracted_audio(out_dir).items() if k in EXPORTED)
    assert s["audio"]["bytes"] < wav_bytes
    audio = _extracted_audio(out_dir)
    for rec in RecordingSet.from_file(dest / xl.LHOTSE_FILES[0]).with_path_prefix(dest):
        assert rec.sources[0].source.endswith(".flac")
        err = np.abs(rec.load_audio()[0] - audio[rec.id]).max()
        assert err <= 2.0**-23, err  # half a step (2**-24), a full step at +1.0


def test_wav_header_is_ieee_float(tmp_path):
    import soundfile as sf

    a = np.array([0.0, -1.0, 0.5, 1e-9], np.float32)
    b = xf.wav_float32_bytes(a, 16000)
    assert b[:4] == b"RIFF" and struct.unpack("<I", b[4:8])[0] == len(b) - 8
    assert struct.unpack("<H", b[20:22])[0] == 3  # WAVE_FORMAT_IEEE_FLOAT
    (tmp_path / "x.wav").write_bytes(b)
    y, sr = sf.read(tmp_path / "x.wav", dtype="float32")
    assert sr == 16000 and np.array_equal(y, a)


# --------------------------------------------------------------------------------------
# determinism, rerun, errors


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_two_exports_are_byte_identical(out_dir, exported, tmp_path):
    other = tmp_path / "elsewhere" / "copy"
    s = vx.export(out_dir, ("lhotse", "hf"), other)
    assert s["audio"]["written"] == len(EXPORTED)
    a, b = _tree(exported), _tree(other)
    assert (
        set(a) == set(b) and len(a) == len(EXPORTED) + len(xl.LHOTSE_FILES) + len(xl.HF_FILES) + 1
    )
    assert [k for k in a if a[k] != b[k]] == []
    again = vx.export(out_dir, ("hf",), other)  # a rerun leaves equal audio files alone
    assert again["audio"] == {
        "written": 0,
        "unchanged": len(EXPORTED),
        "bytes": s["audio"]["bytes"],
    }


def test_missing_or_bad_input_names_the_file(out_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out_dir, bad)
    (bad / "fit" / "identities.h5").unlink()
    with pytest.raises(xl.ExportError, match=r"fit/identities\.h5: missing"):
        vx.export(bad, ("hf",), tmp_path / "x")
    shutil.copy(out_dir / "fit" / "identities.h5", bad / "fit" / "identities.h5")
    (bad / "extract" / "shard-00001.h5").write_bytes(b"not hdf5")
    with pytest.raises(xl.ExportError, match=r"extract/shard-00001\.h5: not a readable HDF5"):
        vx.export(bad, ("hf",), tmp_path / "x")
    (bad / "extract" / "shard-00001.h5").unlink()
    (bad / "features" / "shard-00000.h5").unlink()
    with pytest.raises(xl.ExportError, match=r"features/shard-00000\.h5: missing"):
        vx.export(bad, ("hf",), tmp_path / "x")
    with pytest.raises(xl.ExportError, match="no extract shards"):
        vx.export(tmp_path, ("hf",), tmp_path / "x")


def test_cli(out_dir, tmp_path, capsys):
    from vox3d.tools.cli import main

    dest = tmp_path / "cli"
    assert main(["export", "--format", "hf", str(out_dir), "--dest", str(dest)]) == 0
    assert "5 utterances of 3 identities exported (2 not exported" in capsys.readouterr().out
    assert (dest / "hf" / "utterances.parquet").is_file() and not (dest / "lhotse").exists()
    assert main(["export", "--format", "lhotse", str(tmp_path / "nope"), "--dest", str(dest)]) == 1
    assert "nope: not a folder" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# the card


def _config(**over) -> dict:
    from vox3d.config import load_config

    return load_config(overrides={"out_dir": "/somewhere/out", **over})


def test_card_counts_filters_and_provenance(out_dir, exported, tmp_path):
    col = vx.collect(vx.StageInputs.from_out_dir(out_dir))
    cfg = _config(videos_dir=str(tmp_path / "videos"))
    text = vcard.write_card(exported / "README.md", col, StageTables.from_out_dir(out_dir),
                            cfg, export_dir=exported)  # fmt: skip
    assert (exported / "README.md").read_text() == text
    # counts: 3 identities, 4 videos (idA/ytA1, idB/ytB1, idB/ytB2, idD/ytD1), 5 utterances
    hours = sum(_audio(u + ".mp4").size for u in EXPORTED) / SR / 3600
    assert f"| all | 3 | 4 | 5 | {hours:.3f} | 15 | 13 |" in text
    assert "| split val | 1 | 1 | 2 |" in text and "| split train | 2 | 3 | 3 |" in text
    assert "| male | 1 | 1 | 2 |" in text and "| female | 2 | 3 | 3 |" in text
    # every filter, by stage and reason
    assert "| fit (frames) | (all reasons) | 24 frames | 8 |" in text
    assert "| fit (frames) | no face | | 8 |" in text
    assert "| fit (videos) | no usable frame | | 2 |" in text
    assert "| fit (identities) | no usable frame in any video | | 1 |" in text
    assert "| features | silence | | 1 |" in text
    assert "| export | identity has no fitted 3D shape | 7 utterances | 2 |" in text
    assert "| extract | (all reasons) | 8 videos | 0 |" in text
    # the VoxCeleb2 build-time projection (vox3d.workflow.projection), with its measured inputs
    assert "## Build-time projection" in text and "Projected build time: VoxCeleb2" in text
    assert "| fit_gpu |" in text and "Measured end to end on GPU nodes" in text
    # provenance
    canon = json.dumps({k: v for k, v in cfg.items() if k != "out_dir"}, sort_keys=True,
                       separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    assert hashlib.sha256(canon.encode()).hexdigest() in text
    assert "/somewhere/out" not in text
    from vox3d import __version__

    assert f"| vox3d version | {__version__} |" in text
    for lic in (
        "CC BY 4.0",
        "MIT",
        "BFM academic licence",
        "ICT-FaceKit",
        "3DDFA-V2",
        "Cross-Modal Perceptionist",
    ):
        assert lic in text
    # real data: no accuracy figure (none quoted from another build), only the build's own
    # fit figures: fit/stats.tsv's total (24 frames, 8 rejected) and the exported shapes
    assert "Real videos have no true 3D shape" in text and "states no accuracy" in text
    assert not hasattr(vcard, "SYNTHETIC_REFERENCE")
    assert "| frames kept by the fit filters (`fit/stats.tsv`) | 16 of 24 (66.7%) |" in text
    assert "| identities with a shape | 3 |" in text
    ref = _identities(out_dir)
    exported_ids = sorted({u.split("/")[0] for u in EXPORTED})
    assert len(exported_ids) == 3
    frames = np.median([ref[i]["n_frames"] for i in exported_ids])
    videos = np.median([ref[i]["n_videos"] for i in exported_ids])
    spread = np.median([ref[i]["spread"].astype(np.float64).mean() for i in exported_ids])
    between = np.std([ref[i]["shape"] for i in exported_ids], axis=0, ddof=1).mean()
    assert f"| kept frames pooled per identity (median) | {frames:.1f} |" in text
    assert f"| videos pooled per identity (median) | {videos:.1f} |" in text
    assert f"median over identities) | {spread:.3f} |" in text
    assert f"mean over the K modes) | {between:.3f} |" in text
    assert spread > 0 and between > 0
    # no "mean face" accuracy row: nothing measured against a truth here
    assert "| mean face |" not in text and "Measured on this build" not in text
    assert (
        f"| `audio/ (5 files)` | {sum(len(b) for k, b in _tree(exported).items() if k.startswith('audio/')):,} |"
        in text
    )


def test_config_hash_ignores_out_dir_only():
    a = vcard.config_hash({"out_dir": "a", "seed": 0, "fit": {"x": 1, "y": 2}})
    assert a == vcard.config_hash({"fit": {"y": 2, "x": 1}, "seed": 0, "out_dir": "b"})
    assert a != vcard.config_hash({"out_dir": "a", "seed": 1, "fit": {"x": 1, "y": 2}})


def test_git_commit(tmp_path):
    assert vcard.git_commit(tmp_path) is None  # not a checkout: no failure
    sha = "0123456789abcdef0123456789abcdef01234567"
    (tmp_path / ".git" / "refs" / "heads").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / ".git" / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    assert vcard.git_commit(tmp_path) == sha
    (tmp_path / ".git" / "refs" / "heads" / "main").write_text(sha.replace("0", "f") + "\n")
    assert vcard.git_commit(tmp_path) == sha.replace("0", "f")


def test_fit_accuracy_against_a_known_truth(out_dir, tmp_path):
    """A ground truth equal to the fitted shapes gives zero error; the mean face does not."""
    from vox3d.face.face_model import face_model_settings

    ref = _identities(out_dir)
    ids = sorted(ref)
    gt = tmp_path / "ground_truth.h5"
    with h5py.File(gt, "w") as f:
        g = f.create_group("identities")
        g.create_dataset("id", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        g.create_dataset(
            "id_coef", data=np.stack([ref[i]["shape"] for i in ids]).astype(np.float64)
        )
    cfg = _config()
    acc = vcard.fit_accuracy(out_dir / "fit" / "identities.h5", gt,
                             face_model_settings(cfg["face_model"], cfg["assets"]), n_boot=20)  # fmt: skip
    assert acc["n_identities"] == 3
    assert set(acc["rows"]) == set(acc["vertex_mm"]) == {"fitted", "population_mean"}
    assert acc["vertex_mm"]["fitted"] < 1e-4 < acc["vertex_mm"]["population_mean"]
    assert acc["rows"]["fitted"]["are_mean"] < 1e-6 < acc["rows"]["population_mean"]["are_mean"]
    assert acc["are_pairs"] == "cmp"  # the config default, CMP's positions on ICT
    assert acc["rows"]["fitted"]["r2_vertex"] == pytest.approx(1.0, abs=1e-9)
    assert acc["coef_corr"] == pytest.approx(1.0)
    col = vx.collect(vx.StageInputs.from_out_dir(out_dir))
    md = vcard.card_markdown(col, StageTables.from_out_dir(out_dir), cfg, acc, synthetic=True)
    assert "Measured on this build" in md and "| fitted (this dataset) | 0.0000" in md
    assert "better than the mean face on ARE" in md and "ARE pairs `cmp`" in md
    pm = acc["rows"]["population_mean"]
    assert f"| mean face | {float(pm['are_mean']):.4f} [" in md
    assert "| frames kept by the fit filters" not in md  # measured: no precision table
    # the landmark-rule pairs are a different pair set with different ratio errors
    rule = vcard.fit_accuracy(out_dir / "fit" / "identities.h5", gt,
                              face_model_settings(cfg["face_model"], cfg["assets"]), n_boot=20,
                              are_pairs="landmark_rule")  # fmt: skip
    assert rule["are_pairs"] == "landmark_rule"
    assert rule["rows"]["population_mean"]["are_mean"] != pytest.approx(pm["are_mean"])


def test_export_rules_are_in_the_workflow():
    smk = (Path(__file__).resolve().parents[1] / "rules" / "export.smk").read_text()
    for rule in ("export_audio", "export_lhotse", "export_hf", "export_card"):
        assert f"rule {rule}:" in smk
    assert (
        'include: "rules/export.smk"'
        in (Path(__file__).resolve().parents[1] / "Snakefile").read_text()
    )
    assert os.path.basename(xl.EXPORT_DIR) == "voxceleb3d"
