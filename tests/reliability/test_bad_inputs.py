"""Table-driven bad-input suite (issue 10, item 1): every hostile input, the stage it goes
through, and the outcome it must get.

Outcomes:

* ``rejected: <words>``: a data file; the stage does not raise, and its rejects (the
  shard's ``rejects`` group, rows ``path, reason``) have a row for this file's manifest path
  whose reason contains ``<words>``;
* ``error: <words>``: a model / config file; the loader raises a ``ValueError`` subclass
  whose message names the file (or, for config, the key) and contains ``<words>``;
* ``resampled``: the file is odd but fine; the stage keeps it, normalised (extract: 16 kHz
  mono audio as long as the video and frames at ``frame_rate``; features: features of the
  16 kHz audio; fit: frames fitted, some kept).

Video and audio cases share one corpus (built once per module) pushed through the real
stage functions: manifest -> ``extract_shard`` -> ``features_shard`` and ``fit_shard``.
The table of outcomes is printed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from vox3d import paths

from . import hostile

REAL = paths.DATA_ROOT / "real"
BAD = REAL / "bad"
FRAME_RATE = 5.0


@dataclass(frozen=True)
class Case:
    name: str
    stage: str  # extract | fit | features | safeload | regressor | detector | config
    build: Callable | None  # media: build(root, rel) -> Path; others: see the runners
    expected: str  # "rejected: ..." | "error: ..." | "resampled"
    rel: str = ""  # manifest path of a media case (<id>/<yt>/<utt>.<ext>)


def _media(name, stage, build, expected, ext="mp4", rel=None) -> Case:
    return Case(name, stage, build, expected, rel or f"id_{name}/yt/{name}.{ext}")


# Media through the extract stage.
EXTRACT_CASES = [
    _media("zero_bytes", "extract", hostile.copy_real(BAD / "empty.mp4"), "rejected: empty file"),
    _media("truncated", "extract", hostile.copy_real(BAD / "truncated.mp4"), "rejected: truncated"),
    _media(
        "truncated_half",
        "extract",
        hostile.truncate(hostile.CLIP, 0.5),
        "rejected: truncated",
    ),
    _media(
        "not_a_video",
        "extract",
        hostile.copy_real(BAD / "not_a_video.mp4"),
        "rejected: not a video",
    ),
    _media("random_bytes", "extract", hostile.write_bytes(bytes(range(256)) * 64), "rejected: not"),
    _media("no_audio", "extract", hostile.copy_real(BAD / "no_audio.mp4"), "rejected: no audio"),
    _media("no_video", "extract", hostile.copy_real(BAD / "no_video.mp4"), "rejected: no video"),
    _media("too_short", "extract", hostile.copy_real(BAD / "too_short.mp4"), "rejected: too short"),
    _media("huge_4000x3000", "extract", hostile.huge, "resampled"),
    _media("fps_7", "extract", hostile.reencode("-r", "7"), "resampled"),
    _media("fps_60", "extract", hostile.reencode("-r", "60"), "resampled"),
    _media("variable_fps", "extract", hostile.variable_frame_rate, "resampled"),
    _media(
        "odd_name",
        "extract",
        hostile.copy_real(hostile.CLIP),
        "resampled",
        rel="id ünï 9/clip (1) é/utt #1 ☃ ü.mp4",
    ),
    _media(
        "webm_vp9",
        "extract",
        hostile.copy_real(REAL / "other/pcavs00473/clip/00001.webm"),
        "resampled",
        ext="webm",
    ),  # fmt: skip
]
# Media through the fit stage (after extract).
FIT_CASES = [
    _media("good_clip", "fit", hostile.reencode(), "resampled"),
    _media("no_face", "fit", hostile.copy_real(BAD / "no_face.mp4"), "rejected: no face"),
    _media(
        "no_face_background",
        "fit",
        hostile.copy_real(BAD / "no_face_background.mp4"),
        "rejected: no face",
    ),
    _media("two_faces", "fit", hostile.two_faces, "rejected: multiple faces"),
    _media("huge_4000x3000_fit", "fit", hostile.huge, "resampled"),
]
# Audio (inside real videos) through the features stage (after extract).
FEATURES_CASES = [
    _media("silence", "features", hostile.reencode("-af", "volume=0"), "rejected: silence"),
    _media("clipping", "features", hostile.reencode("-af", "volume=40dB"), "rejected: clipped"),
    _media("stereo_44k1", "features", hostile.reencode("-ac", "2", "-ar", "44100"), "resampled"),
    _media("mono_8k", "features", hostile.reencode("-ar", "8000"), "resampled"),
    _media(
        "grid_mp2_stereo_44k1",
        "features",
        hostile.copy_real(REAL / "other/grid_bbaf2n/grid/bbaf2n.mpg"),
        "resampled",
        ext="mpg",
    ),  # fmt: skip
]
MEDIA_CASES = EXTRACT_CASES + FIT_CASES + FEATURES_CASES


# ------------------------------------------------------------------------------ runners


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    """Build every media case into one videos_dir and run manifest, extract, fit and
    features on it (one shard).  Returns the outputs' paths and the rejects by stage."""
    from vox3d.audio.features import collect_rejects, features_shard, read_index, read_rejects
    from vox3d.config import load_config
    from vox3d.fitting.fit import FitConfig, fit_shard
    from vox3d.fitting.fit_tables import write_fit_tables
    from vox3d.io import read_tsv
    from vox3d.media.extract import aggregate, extract_shard
    from vox3d.media.extract_shard import ExtractShard
    from vox3d.media.manifest import build_manifest, write_manifest

    root = tmp_path_factory.mktemp("hostile_videos")
    out = tmp_path_factory.mktemp("hostile_out")
    for c in MEDIA_CASES:
        c.build(root, c.rel)
    rows = build_manifest(root, progress=False)
    write_manifest(rows, out / "manifest.tsv", out / "shards", shard_size=1000)
    shard = out / "shards" / "shard-00000.tsv"
    res = {"extract": out / "extract.h5", "fit": out / "fit.h5", "features": out / "feat.h5"}
    extract_shard(shard, root, res["extract"], frame_rate=FRAME_RATE, progress=False)

    cfg = load_config()
    for k, v in cfg["assets"].items():  # config paths are relative to the repository
        if isinstance(v, str):
            cfg["assets"][k] = str((paths.REPO_ROOT / v).resolve())
    fit_cfg = FitConfig.from_config({**cfg, "fit": {**cfg["fit"], "device": "cpu"}})
    fit_shard(res["extract"], res["fit"], fit_cfg, progress=False)
    features_shard(res["extract"], res["features"], progress=False)

    with ExtractShard(res["extract"]) as sh:
        extracted = {v["video"]: (i, v) for i, v in enumerate(sh.videos)}
        frames = {v["video"]: sh.frames(i)[1] for i, v in enumerate(sh.videos)}
        rejects = {"extract": {r["path"]: r["reason"] for r in sh.rejects}}
    with h5py.File(res["fit"], "r") as f:
        rejects["fit"] = dict(
            zip(
                [s.decode() for s in f["rejects/path"][()]],
                [s.decode() for s in f["rejects/reason"][()]],
                strict=True,
            )
        )
        fit_counts = {
            p.decode(): (int(n), int(k))
            for p, n, k in zip(
                f["videos/path"][()], f["videos/n_frames"][()], f["videos/n_kept"][()], strict=True
            )
        }
    rejects["features"] = {r["path"]: r["reason"] for r in read_rejects(res["features"])}
    # the stage tables a person reads (path, stage, reason), as the workflow writes them
    aggregate([res["extract"]], out / "extract_rejects.tsv", out / "extract_stats.tsv")
    write_fit_tables([res["fit"]], None, out / "fit_rejects.tsv", out / "fit_stats.tsv")
    collect_rejects([res["features"]], out / "features_rejects.tsv")
    tables = {
        st: {r["path"]: r for r in read_tsv(out / f"{st}_rejects.tsv")}
        for st in ("extract", "fit", "features")
    }
    feat_videos = set(read_index(res["features"])["video"])
    return {
        "manifest": {r["path"]: r for r in rows},
        "extracted": extracted,
        "frame_times": frames,
        "rejects": rejects,
        "fit_counts": fit_counts,
        "features": feat_videos,
        "tables": tables,
    }


def _media_outcome(case: Case, run: dict) -> str:
    """What happened to the case's file in its stage, as an outcome string."""
    rej = run["rejects"]
    if case.rel in rej["extract"]:
        where = "" if case.stage == "extract" else "in extract, before this stage: "
        return f"rejected: {where}" + rej["extract"][case.rel]
    if case.rel not in run["extracted"]:
        return "lost: neither extracted nor rejected"
    if case.stage == "extract":
        _, v = run["extracted"][case.rel]
        times = run["frame_times"][case.rel]
        return (
            f"resampled: {v['audio_length'] / 16000:.2f} s audio at 16 kHz, "
            f"{len(times)} frames {v['width']}x{v['height']}"
        )
    if case.rel in rej[case.stage]:
        return "rejected: " + rej[case.stage][case.rel]
    if case.stage == "features":
        return "resampled: features" if case.rel in run["features"] else "lost in features"
    n, k = run["fit_counts"][case.rel]
    return f"resampled: {k} of {n} frames fitted and kept"


def _check_resampled_extract(case: Case, run: dict) -> None:
    """16 kHz mono audio as long as the probed duration, frames every 1/frame_rate s."""
    _, v = run["extracted"][case.rel]
    dur = float(run["manifest"][case.rel]["duration_s"])
    assert abs(v["audio_length"] / 16000 - dur) < 0.15, (v["audio_length"], dur)
    t = run["frame_times"][case.rel]
    assert len(t) >= 1 and t[0] < 1 / FRAME_RATE, t[:3]
    # sampled at frame_rate: steps of 1/frame_rate, at most one source frame off
    steps = np.diff(t)
    assert len(t) >= int(dur * FRAME_RATE) - 2, (len(t), dur)
    assert np.all(np.abs(steps - 1 / FRAME_RATE) < 0.12), steps


@pytest.mark.slow
@pytest.mark.parametrize("case", MEDIA_CASES, ids=[c.name for c in MEDIA_CASES])
def test_media(case: Case, media_run, outcomes):
    outcome = _media_outcome(case, media_run)
    outcomes.append((case.name, case.rel, case.stage, outcome))
    kind, _, words = case.expected.partition(": ")
    if kind == "rejected":
        assert outcome.startswith("rejected: "), outcome
        assert words.lower() in outcome.lower(), (case.expected, outcome)
        row = media_run["tables"][case.stage].get(case.rel)
        assert row is not None, f"{case.rel} missing from {case.stage}/rejects.tsv"
        assert row["stage"] == case.stage and words.lower() in row["reason"].lower(), row
    else:
        assert outcome.startswith("resampled"), outcome
        if case.stage == "extract":
            _check_resampled_extract(case, media_run)
        if case.stage == "fit":
            assert " 0 of" not in outcome, outcome
        assert all(case.rel not in t for t in media_run["tables"].values()), case.rel


# ------------------------------------------------------------------- model, HDF5, config


def _faceboxes(path):
    from vox3d.face.detector import load_faceboxes_net

    return load_faceboxes_net(path)


def _mb05(path):
    from vox3d.face.regressor import load_mobilenet

    return load_mobilenet(path, widen_factor=0.5, num_classes=62)


def _mb1(path):
    from vox3d.face.regressor import load_mobilenet

    return load_mobilenet(path, widen_factor=1.0, num_classes=62)


def _mean_std(path):
    from vox3d.face.regressor import load_param_mean_std

    return load_param_mean_std(path)


def _safe_pickle(path):
    from vox3d.safeload import load_pickle

    return load_pickle(path)


def _safe_torch(path):
    from vox3d.safeload import load_torch

    return load_torch(path)


def _ict_n20(path):
    from vox3d.fitting.ict_checkpoint import make_regressor

    return make_regressor(path, 20, 10)


def _fit_shard(path):
    from vox3d.fitting.fit import FitConfig, fit_shard

    cfg = FitConfig.from_config({"fit": {"device": "cpu"}})
    return fit_shard(path, path.with_name("fit_out.h5"), cfg, progress=False)


def _features_shard(path):
    from vox3d.audio.features import features_shard

    return features_shard(path, path.with_name("feat_out.h5"), progress=False)


def _grow_first(state):
    import torch

    k = sorted(state)[0]
    return {**state, k: torch.zeros(*(s + 1 for s in state[k].shape))}


def _extra_key(state):
    import torch

    return {**state, "backdoor.weight": torch.zeros(3)}


def _not_extract_h5(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "something.else"
        f["audio"] = np.zeros(3, np.float32)
    return path


def _truncated_extract_h5(path: Path) -> Path:
    full = path.with_name("full_extract.h5")
    with h5py.File(full, "w") as f:
        f.attrs.update(format="vox3d.extract", format_version=1)
        f["audio"] = np.zeros(100_000, np.float32)
    return hostile.truncated_copy(full, path, 0.3)


FB, MB, MS = paths.FACEBOXES_WEIGHTS, paths.MB05_WEIGHTS, paths.PARAM_MEAN_STD
ICT = paths.REPO_ROOT / "vox3d" / "data" / "ict_regressor.pth"


@dataclass(frozen=True)
class FileCase:
    name: str
    stage: str
    build: Callable[[Path, Path], Path]  # (tmp_path, marker) -> the hostile file
    load: Callable[[Path], object]
    expected: str  # "error: <words>"
    runs_code: bool = False  # the file would create `marker` if loaded unsafely


FILE_CASES = [
    FileCase("truncated_faceboxes.pth", "detector",
             lambda t, m: hostile.truncated_copy(FB, t / "fb.pth"), _faceboxes,
             "error: could not read checkpoint"),
    FileCase("truncated_mb05.pth", "regressor",
             lambda t, m: hostile.truncated_copy(MB, t / "mb05.pth"), _mb05,
             "error: could not read checkpoint"),
    FileCase("wrong_shapes_faceboxes.pth", "detector",
             lambda t, m: hostile.edited_state_dict(FB, t / "fb.pth", _grow_first), _faceboxes,
             "error: has shape"),
    FileCase("wrong_shapes_mb05.pth", "regressor",
             lambda t, m: hostile.edited_state_dict(MB, t / "mb05.pth", _grow_first), _mb05,
             "error: has shape"),
    FileCase("mb1_weights_for_mb05", "regressor",
             lambda t, m: hostile.edited_state_dict(MB, t / "mb05.pth", lambda s: s),
             _mb1,
             "error: widen_factor=1.0"),
    FileCase("extra_keys_faceboxes.pth", "detector",
             lambda t, m: hostile.edited_state_dict(FB, t / "fb.pth", _extra_key), _faceboxes,
             "error: unexpected weights ['backdoor.weight']"),
    FileCase("extra_keys_mb05.pth", "regressor",
             lambda t, m: hostile.edited_state_dict(MB, t / "mb05.pth", _extra_key), _mb05,
             "error: unexpected weights ['backdoor.weight']"),
    FileCase("list_not_state_dict.pth", "detector",
             lambda t, m: hostile.torch_save([1, 2], t / "x.pth"),
             _faceboxes, "error: not a FaceBoxes state dict"),
    FileCase("raw_pickle.pth", "detector",
             lambda t, m: hostile.write_bytes(__import__("pickle").dumps({"a": 1}))(t, "r.pth"),
             _faceboxes, "error: refused to load"),
    FileCase("text_named.pth", "safeload",
             lambda t, m: hostile.write_bytes(b"hello, not a checkpoint\n")(t, "t.pth"),
             _safe_torch, "error: could not read checkpoint"),
    FileCase("missing.pth", "safeload", lambda t, m: t / "nope.pth", _safe_torch,
             "error: not found"),
    FileCase("code_running.pkl", "safeload", lambda t, m: hostile.code_pickle(t / "x.pkl", m),
             _safe_pickle, "error: refused to load", runs_code=True),
    FileCase("code_running_mean_std.pkl", "regressor",
             lambda t, m: hostile.code_pickle(t / "param_mean_std.pkl", m), _mean_std,
             "error: refused to load", runs_code=True),
    FileCase("code_running.pth", "safeload", lambda t, m: hostile.code_torch(t / "x.pth", m),
             _safe_torch, "error: refused to load", runs_code=True),
    FileCase("code_running_faceboxes.pth", "detector",
             lambda t, m: hostile.code_torch(t / "fb.pth", m), _faceboxes,
             "error: refused to load", runs_code=True),
    FileCase("truncated_mean_std.pkl", "regressor",
             lambda t, m: hostile.truncated_copy(MS, t / "ms.pkl"), _mean_std,
             "error: not a readable pickle"),
    FileCase("ict_regressor_wrong_layout", "regressor", lambda t, m: ICT, _ict_n20,
             "error: n_id=40"),
    FileCase("truncated_extract.h5", "fit",
             lambda t, m: _truncated_extract_h5(t / "shard-00000.h5"), _fit_shard,
             "error: not a readable HDF5 file"),
    FileCase("foreign_extract.h5", "features",
             lambda t, m: _not_extract_h5(t / "shard-00000.h5"), _features_shard,
             "error: not an extract shard"),
]  # fmt: skip


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.name for c in FILE_CASES])
def test_model_and_shard_files(case: FileCase, tmp_path, outcomes):
    marker = tmp_path / "PWNED"
    path = case.build(tmp_path, marker)
    if case.runs_code:  # the file is really hostile: plain pickle would run its code
        import pickle

        data = path.read_bytes()
        if path.suffix == ".pth":
            import torch

            torch.load(path, weights_only=False)  # noqa: S614 - the control, in a tmp dir
        else:
            pickle.loads(data)  # noqa: S301 - the control, in a tmp dir
        assert marker.exists(), "the hostile file did not run its code under a plain load"
        marker.unlink()
    with pytest.raises(Exception) as ei:
        case.load(path)
    msg = str(ei.value)
    outcomes.append((case.name, path.name, case.stage, f"error ({type(ei.value).__name__}): {msg}"))
    assert str(path) in msg, f"the message does not name the file: {msg}"
    assert case.expected.removeprefix("error: ") in msg, msg
    if case.runs_code:
        assert not marker.exists(), "loading the hostile file ran its code"
    if case.stage in ("safeload", "detector", "regressor"):
        from vox3d.safeload import BadModelFileError

        assert isinstance(ei.value, BadModelFileError), type(ei.value)


def _base_config() -> dict:
    with open(paths.REPO_ROOT / "config.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _edit(**changes):
    """A config builder: config.yaml with dotted keys set (value None with key '-': drop)."""

    def build():
        cfg = copy.deepcopy(_base_config())
        for dotted, value in changes.items():
            *parents, last = dotted.split("__")
            d = cfg
            for p in parents:
                d = d[p]
            d[last] = value
        return cfg

    return build


CONFIG_CASES = [
    ("unknown_top_key", _edit(framerate=5), "unknown config key 'framerate'"),
    ("unknown_nested_key", _edit(extract__framerate=5), "unknown config key 'extract.framerate'"),
    ("wrong_type_number", _edit(extract__frame_rate="fast"),
     "config key 'extract.frame_rate': 'fast' is not of type 'number'"),
    ("wrong_type_int", _edit(shard_size="64"), "config key 'shard_size'"),
    ("wrong_enum", _edit(extract__decoder="vlc"), "config key 'extract.decoder'"),
    ("section_not_mapping", _edit(fit=[1, 2]), "config key 'fit'"),
    ("out_dir_in_source", _edit(out_dir="vox3d/out"), "config key 'out_dir'"),
    ("out_dir_is_fs_root", _edit(out_dir="/"), "file-system root"),
    ("out_dir_over_inputs", _edit(out_dir="/data/v/out", videos_dir="/data/v"), "overlaps"),
]  # fmt: skip


@pytest.mark.parametrize("name,build,words", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_values(name, build, words, outcomes):
    from vox3d.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as ei:
        validate_config(build())
    outcomes.append((name, "config dict", "config", f"error: {ei.value}".replace("\n", " ")))
    assert words in str(ei.value), str(ei.value)


def test_config_file_that_tries_to_run_code(tmp_path, outcomes):
    """A YAML config with a python tag: refused by the safe YAML loader, naming the file,
    and the command never runs."""
    from vox3d.config import load_config

    marker = tmp_path / "PWNED"
    cfg = tmp_path / "evil config.yaml"
    cfg.write_text(f"out_dir: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(yaml.YAMLError) as ei:
        load_config(cfg)
    msg = str(ei.value)
    outcomes.append(("yaml_python_tag", cfg.name, "config", "error: " + msg.replace("\n", " ")))
    assert cfg.name in msg and "python/object/apply" in msg, msg
    assert not marker.exists()
