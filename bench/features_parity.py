"""Parity figures of the voice features (docs/features.md), computed and printed.

Not a timing: every number here is a difference or a statistic, computed with the library
functions the tests use (``tests/test_fbank.py``, ``tests/test_features.py``) on the shared
real data.

1. Every ``cmp/reference_fbank/*.wav``: voiced samples, and max abs difference to the
   original's ``.prenorm.npy`` / ``.npy`` of the float64 path, of float input, of the
   default float32 spectra and of ``vox3d features X.mp4`` (the ffmpeg program); the voiced
   length when the detector is called once per frame instead of on every buffered frame.
2. The real VoxCeleb2 clips through the pipeline (manifest -> extract -> features, both
   decoders) against the reference arrays and against each other; the AAC end padding that
   the extract stage cuts.
3. Statistics of our stored arrays of the real clips and LibriSpeech utterances next to
   CMP's ``preprocessed_MFCC`` arrays (per-band mean/std, range, pooled quantiles).

Usage: ``PYTHONPATH=. .venv/bin/python bench/features_parity.py``
"""

from __future__ import annotations

import collections
import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soundfile as sf  # noqa: E402

from vox3d.audio import fbank, features  # noqa: E402
from vox3d.audio.featurefile import file_features  # noqa: E402
from vox3d.audio.pcm import SAMPLE_RATE, load_audio, to_pcm16  # noqa: E402
from vox3d.audio.vad import (  # noqa: E402
    VAD_AGGRESSIVENESS,
    VAD_FRAME_MS,
    VAD_PADDING_MS,
    VAD_RATIO,
    remove_silence,
)
from vox3d.paths import CMP_DIR, DATA_ROOT  # noqa: E402

REF = CMP_DIR / "reference_fbank"
REAL = DATA_ROOT / "real"
VAD_FRAME_BYTES = 2 * SAMPLE_RATE * VAD_FRAME_MS // 1000


def _maxabs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def vad_once_voiced(pcm: np.ndarray) -> int:
    """Voiced samples when each 20 ms frame is classified once (one detector call per
    frame, the collector's 2-of-2 rule on those flags), the variant the original is not."""
    import webrtcvad

    b = pcm.tobytes()
    n = len(range(0, len(b) - VAD_FRAME_BYTES, VAD_FRAME_BYTES))  # offset + 640 < len
    vad = webrtcvad.Vad(VAD_AGGRESSIVENESS)
    speech = [
        vad.is_speech(b[k * VAD_FRAME_BYTES : (k + 1) * VAD_FRAME_BYTES], SAMPLE_RATE)
        for k in range(n)
    ]
    size = int(VAD_PADDING_MS / VAD_FRAME_MS)
    need = VAD_RATIO * size
    ring: collections.deque[int] = collections.deque(maxlen=size)
    triggered, kept = False, 0
    for k in range(n):
        ring.append(k)
        if not triggered:
            if sum(speech[j] for j in ring) > need:
                triggered, kept = True, kept + len(ring)
                ring.clear()
        else:
            kept += 1
            if sum(not speech[j] for j in ring) > need:
                triggered = False
                ring.clear()
    return kept * VAD_FRAME_BYTES // 2


def _ref_video(name: str) -> Path | None:
    """The VoxCeleb2 clip a reference WAV was decoded from (none for LibriSpeech)."""
    ident, utt = name.split("_")
    hits = sorted((REAL / "voxceleb" / ident).glob(f"*/{utt}.mp4"))
    return hits[0] if hits else None


def readme_voiced() -> dict[str, int]:
    """name -> voiced samples of the table in reference_fbank/README.md."""
    out = {}
    rows = [r for r in (REF / "README.md").read_text().splitlines() if r.startswith("|")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    col = head.index("voiced samples")
    for r in rows[2:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        out[cells[0]] = int(cells[col].replace(",", ""))
    return out


def reference_parity(tmp: Path) -> None:
    from vox3d.tools.cli import main as vox3d_main

    wavs = sorted(REF.glob("*.wav"))
    table = readme_voiced()
    print(f"\n## 1. reference_fbank: {len(wavs)} WAVs against the original's arrays")
    print(
        "voiced: samples kept by VAD (= README: equals the README table); max abs difference\n"
        "to the original's arrays: prenorm (log-mel before normalisation), stored (the .npy),\n"
        "float in (int16 / 32768 input), mp4 cli (`vox3d features X.mp4`, the ffmpeg program),\n"
        "all precision float64; float32 (the workflow default precision); VAD once: voiced\n"
        "samples when the detector is called once per frame, change vs voiced"
    )
    print(
        f"{'name':20s} {'voiced':>7} {'README':>6} {'prenorm':>8} {'stored':>8} {'float in':>8} "
        f"{'mp4 cli':>8} {'float32':>8} | {'VAD once':>8} {'change':>7}"
    )
    worst = collections.defaultdict(float)
    exact64 = fbank.FeatureConfig(precision="float64")
    for w in wavs:
        name = w.stem
        pcm, sr = sf.read(w, dtype="int16")
        assert sr == SAMPLE_RATE and pcm.ndim == 1
        ref = np.load(REF / f"{name}.npy")
        ref_pre = np.load(REF / f"{name}.prenorm.npy")
        voiced = remove_silence(pcm)
        pre = fbank.log_mel_energies(voiced).astype(np.float32)
        assert pre.shape == ref_pre.shape, (name, pre.shape, ref_pre.shape)
        d = {"prenorm": _maxabs(pre, ref_pre)}
        stored = fbank.cmp_features(pcm)
        assert stored.shape == ref.shape
        d["stored"] = _maxabs(stored, ref)
        f = fbank.utterance_features(pcm.astype(np.float32) / 32768.0, sr, exact64)
        d["float in"] = _maxabs(f.stored(), ref)
        f32 = fbank.utterance_features(pcm, sr, fbank.FeatureConfig(precision="float32"))
        d["float32"] = _maxabs(f32.stored(), ref)
        mp4 = _ref_video(name)
        cli_col = "-"
        if mp4 is not None and shutil.which("ffmpeg"):
            out = tmp / f"{name}.cli.npy"
            with contextlib.redirect_stdout(io.StringIO()):
                assert (
                    vox3d_main(["features", str(mp4), "--out", str(out), "--precision", "float64"])
                    == 0
                )
            a = np.load(out)
            assert a.shape == ref.shape
            d["mp4 cli"] = _maxabs(a, ref)
            cli_col = f"{d['mp4 cli']:8.3g}"
        once = vad_once_voiced(pcm)
        change = 100.0 * (once - voiced.size) / voiced.size
        for k, v in d.items():
            worst[k] = max(worst[k], v)
        if mp4 is not None:
            worst["float32 VoxCeleb2"] = max(worst["float32 VoxCeleb2"], d["float32"])
        worst["VAD once %"] = max(worst["VAD once %"], abs(change))
        print(
            f"{name:20s} {voiced.size:7d} {str(table.get(name) == voiced.size):>6} "
            f"{d['prenorm']:8.3g} {d['stored']:8.3g} "
            f"{d['float in']:8.3g} {cli_col:>8} {d['float32']:8.2g} | {once:8d} "
            f"{change:+6.2f}%"
        )
    print(
        f"max over the {len(wavs)} files: "
        + ", ".join(f"{k} {worst[k]:.3g}" for k in ("prenorm", "stored", "float in", "mp4 cli"))
        + f"; float32 {worst['float32']:.2g} (the VoxCeleb2 clips: "
        f"{worst['float32 VoxCeleb2']:.2g})"
    )
    print(
        f"voiced length change with one detector call per frame: up to {worst['VAD once %']:.2f}%"
    )


def _extract(shards: Path, tmp: Path, decoder: str) -> dict[str, Path]:
    """Extract shard of the real clips with `decoder`, and its feature shards with each
    precision (the default float32 spectra and the original's float64)."""
    from vox3d.media import extract

    ex = tmp / f"extract_{decoder}.h5"
    extract.extract_shard(
        shards / "shard-00000.tsv", REAL / "voxceleb", ex, decoder=decoder, progress=False
    )
    out = {"extract": ex}
    for precision in ("float32", "float64"):
        out[precision] = tmp / f"features_{decoder}_{precision}.h5"
        cfg = fbank.FeatureConfig(precision=precision)
        res = features.features_shard(ex, out[precision], cfg, progress=False)
        assert res["rejected"] == 0, res
    return out


def _ref_name(utt: str) -> str | None:
    """reference_fbank name of a pipeline utterance ``<identity>/<clip>/<utt>``."""
    ident, _, u = utt.split("/")
    name = f"{ident}_{u}"
    return name if (REF / f"{name}.npy").is_file() else None


#: frames at the end of an utterance that run past its last sample (two cyclically filled,
#: one empty: the voiced length is a multiple of 320 samples); where two voiced lengths
#: differ, these frames of the shorter one are not made of the same samples as the other's
TAIL_FRAMES = 3


def _same_sample_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """max abs difference of two unrepeated arrays over the frames made of the same samples
    (all frames when the lengths are equal, else all but the shorter one's tail frames), and
    over all common frames."""
    t = min(len(a), len(b))
    same = t if len(a) == len(b) else t - TAIL_FRAMES
    return _maxabs(a[:same], b[:same]), _maxabs(a[:t], b[:t])


def _shard_audio(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path) as f:
        videos = [v.decode() for v in f["video"][()]]
        out = {}
        for k, v in enumerate(videos):
            o, n = int(f["audio_offset"][k]), int(f["audio_length"][k])
            out[v] = to_pcm16(f["audio"][o : o + n])
    return out


def pipeline(tmp: Path) -> None:
    import av

    from vox3d.media.manifest import build_manifest, write_manifest

    if shutil.which("ffmpeg") is None:
        print("\n## 2. pipeline: skipped (needs the ffmpeg program)")
        return
    rows = build_manifest(REAL / "voxceleb", None, "pyav", 1, progress=False)
    write_manifest(rows, tmp / "manifest.tsv", tmp / "shards", 64)
    ff = _extract(tmp / "shards", tmp, "ffmpeg")
    pa = _extract(tmp / "shards", tmp, "pyav")
    ver = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split()
    print(
        f"\n## 2. pipeline (manifest -> extract -> features) on {len(rows)} real VoxCeleb2 "
        f"clips; system {ver[0]} {ver[2]}, PyAV {av.__version__} (bundled FFmpeg "
        f"{getattr(av, 'ffmpeg_version_info', '?')})"
    )
    print(
        "cut: samples the ffmpeg program decodes beyond the extract shard's audio (AAC end\n"
        "padding beyond the declared duration); vs ref: max abs difference to the original's\n"
        "array of the reference WAV (its unrepeated frames) on the frames made of the same\n"
        "samples [on every common frame], decoder ffmpeg; pyav: samples that differ from the\n"
        "ffmpeg decoder's (max difference in LSB) and features max abs vs the ffmpeg decoder's"
    )
    print(
        f"{'utterance':22s} {'cut':>4} {'frames/ref':>10} {'vs ref float64':>22} "
        f"{'vs ref float32':>20} | {'pyav samples':>12} {'LSB':>3} {'float64':>8} "
        f"{'float32':>8}"
    )
    a_ff, a_pa = _shard_audio(ff["extract"]), _shard_audio(pa["extract"])
    assert list(a_ff) == list(a_pa)
    videos = features.read_index(ff["float64"])["video"]
    for d in (ff, pa):
        for prec in ("float32", "float64"):
            assert features.read_index(d[prec])["video"] == videos
    ref_rows = []
    av_max = {"float64": 0.0, "float32": 0.0}
    n_diff = n_all = 0
    for i, video in enumerate(videos):
        utt = features.utterance_id(video)
        full = load_audio(REAL / "voxceleb" / video)[0]  # the ffmpeg program's decode
        x, y = a_ff[video], a_pa[video]
        assert np.array_equal(full[: x.size], x)  # the same samples, cut at the end
        cut = full.size - x.size
        m = min(x.size, y.size)
        lsb = np.abs(x[:m].astype(np.int32) - y[:m].astype(np.int32))
        nd = int(np.count_nonzero(lsb)) + abs(x.size - y.size)
        n_diff += nd
        n_all += max(x.size, y.size)
        cols = {}
        for prec in ("float64", "float32"):
            xf = features.read_utterance(ff[prec], i)
            xa = features.read_utterance(pa[prec], i)
            av_max[prec] = max(av_max[prec], _same_sample_diff(xf, xa)[0])
            cols[f"av{prec}"] = _same_sample_diff(xf, xa)[0]
            name = _ref_name(utt)
            if name is not None:
                n_pre = np.load(REF / f"{name}.prenorm.npy").shape[0]
                ref = np.load(REF / f"{name}.npy")[:n_pre]  # the unrepeated frames
                cols[prec] = _same_sample_diff(xf, ref)
                cols["frames"] = f"{len(xf)}/{len(ref)}"
        if "float64" in cols:
            ref_rows.append((utt, cut, cols["float64"], cols["float32"]))
            r64 = f"{cols['float64'][0]:.3g} [{cols['float64'][1]:.3g}]"
            r32 = f"{cols['float32'][0]:.3g} [{cols['float32'][1]:.3g}]"
        else:
            r64 = r32 = "-"
        print(
            f"{utt:22s} {cut:4d} {cols.get('frames', '-'):>10} {r64:>22} {r32:>20} | "
            f"{nd:12d} {int(lsb.max()) if lsb.size else 0:3d} {cols['avfloat64']:8.2g} "
            f"{cols['avfloat32']:8.2g}"
        )
    cut_rows = [r for r in ref_rows if r[1] > 0]
    whole = [r for r in ref_rows if r[1] == 0]
    lo = min(r[2][0] for r in cut_rows)
    hi = max(r[2][0] for r in cut_rows)
    print(
        f"reference clips: {len(ref_rows)}; {len(cut_rows)} with end padding cut (up to "
        f"{max(r[1] for r in cut_rows)} samples): max abs vs reference {lo:.2g} - {hi:.2g} "
        f"(float64) on the frames made of the same samples, up to "
        f"{max(r[2][1] for r in cut_rows):.2g} on every common frame"
    )
    for utt, _, d64, d32 in whole:
        print(
            f"without padding: {utt}: max abs vs reference {d64[1]:.3g} (float64), "
            f"{d32[1]:.2g} (float32 spectra)"
        )
    print(
        f"decoder pyav vs ffmpeg: {n_diff} of {n_all} samples differ "
        f"({100.0 * n_diff / n_all:.3f}%); features max abs {av_max['float64']:.2g} "
        f"(float64), {av_max['float32']:.2g} (float32 spectra)"
    )


def _quantiles(arrs: list[np.ndarray]) -> np.ndarray:
    return np.quantile(np.concatenate(arrs), [0.01, 0.05, 0.5, 0.95, 0.99])


def real_speech() -> None:
    if shutil.which("ffmpeg") is None:
        print("\n## 3. real speech statistics: skipped (needs the ffmpeg program)")
        return
    cmp = [np.load(f) for f in sorted((CMP_DIR / "preprocessed_MFCC").glob("*/*/*.npy"))]
    clips = sorted((REAL / "voxceleb").glob("*/*/*.mp4"))
    flacs = sorted((REAL / "librispeech").glob("*/*/*.flac"))
    ours, pre_mean, pre_std = [], 0.0, 0.0
    for c in clips + flacs:
        f = file_features(c)  # the workflow default (float32 spectra)
        pre_mean = max(pre_mean, float(np.abs(f.frames.mean(0)).max()))
        pre_std = max(pre_std, float(np.abs(f.frames.std(0) - 1).max()))
        ours.append(f.stored())
    print(
        f"\n## 3. real speech: our stored arrays of {len(clips)} VoxCeleb2 clips + "
        f"{len(flacs)} LibriSpeech utterances vs CMP's {len(cmp)} preprocessed_MFCC arrays"
    )
    print(
        f"ours before the repeat: max per-band |mean| {pre_mean:.2g}, max |std - 1| {pre_std:.2g}"
    )
    print(
        f"{'':5s} {'arrays':>6} {'min frames':>10} {'max |mean|':>10} {'std min':>7} "
        f"{'std max':>7} {'min':>7} {'max':>6} | pooled quantiles 1 5 50 95 99 %"
    )
    qs = {}
    for label, group in (("CMP", cmp), ("ours", ours)):
        q = qs[label] = _quantiles(group)
        print(
            f"{label:5s} {len(group):6d} {min(a.shape[0] for a in group):10d} "
            f"{max(float(np.abs(a.mean(0)).max()) for a in group):10.3f} "
            f"{min(float(a.std(0).min()) for a in group):7.3f} "
            f"{max(float(a.std(0).max()) for a in group):7.3f} "
            f"{min(float(a.min()) for a in group):7.2f} {max(float(a.max()) for a in group):6.2f}"
            f" | " + " ".join(f"{v:.2f}" for v in q)
        )
    print(f"max quantile difference: {np.abs(qs['CMP'] - qs['ours']).max():.2f}")


def main() -> None:
    import h5py

    print(f"numpy {np.__version__}, h5py {h5py.__version__}; data {DATA_ROOT}")
    with tempfile.TemporaryDirectory(prefix="vox3d-parity-") as d:
        tmp = Path(d)
        reference_parity(tmp)
        pipeline(tmp)
        real_speech()


if __name__ == "__main__":
    main()
