"""Benchmark of the features stage and the training reader; prints what it measures.

1. Real-time factor (seconds of audio per second of wall time, one process, one thread) of
   our feature stage (extract shard -> feature shard, HDF5 read/write included; default
   settings: compression none) next to a faithful per-utterance loop in the original's
   style, not slowed down (its documented steps: read a WAV file with
   `wave`, 20 ms Frame objects, the ring-buffer collector calling the detector on every
   buffered frame, each segment written to a temporary WAV and read back, the Sphinx-style
   per-frame Python loop (np.insert pre-emphasis, one rfft and one dot per frame),
   normalisation, the append loop to 1000 frames, np.save per file).  Both on the same
   real speech (reference_fbank WAVs + LibriSpeech FLACs as 16-bit WAV); their outputs are
   compared too.
2. HDF5 layout options of ``frames`` (rows per chunk x compression): file size and random
   crop reads/s straight from the file (``FeatureStore(cache=False)``).
3. float16 storage: size and max abs error against float32.
4. Random crops/s of the chosen layout (in-memory cache per process, the default), batch
   64, crops 300-800 frames: ``BatchLoader`` (one tensor per batch, reused buffers; shared
   memory with workers) with 0 and 2 workers (the targets), next to the map-style
   ``DataLoader(store, batch_size=64, collate_fn=collate)`` and ``FeatureStore[i]``.
5. The choices inside the log-mel energies: CPU time of blocks of 128 frames vs one
   rfft over an utterance or over all recordings, float32 vs float64 spectra; the rfft of
   one block in numpy / scipy, float32 / float64; the sparse vs a dense filterbank product.

Every timing is repeated 3 times (interleaved; the machine is shared) and the median is
printed with the load average (``os.getloadavg``) around it.

Usage: ``PYTHONPATH=. .venv/bin/python bench/features.py [--quick]``
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from vox3d.audio import fbank, features  # noqa: E402
from vox3d.audio.featurestore import FeatureStore, collate  # noqa: E402
from vox3d.audio.vad import remove_silence  # noqa: E402
from vox3d.paths import CMP_DIR, DATA_ROOT  # noqa: E402


# --------------------------------------------------------------------------------------
# 1. the original's per-utterance loop (documented steps, written out as it does them)
# --------------------------------------------------------------------------------------
class _Frame:
    def __init__(self, data: bytes, timestamp: float, duration: float) -> None:
        self.bytes = data
        self.timestamp = timestamp
        self.duration = duration


def _read_wave(path: str) -> tuple[bytes, int]:
    with contextlib.closing(wave.open(path, "rb")) as wf:
        assert wf.getnchannels() == 1 and wf.getsampwidth() == 2
        rate = wf.getframerate()
        assert rate in (8000, 16000, 32000)
        return wf.readframes(wf.getnframes()), rate


def _write_wave(path: str, data: bytes, rate: int) -> None:
    with contextlib.closing(wave.open(path, "wb")) as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(data)


def _frames(ms: int, audio: bytes, rate: int):
    n = int(rate * (ms / 1000.0) * 2)
    offset, ts, dur = 0, 0.0, (float(n) / rate) / 2.0
    while offset + n < len(audio):
        yield _Frame(audio[offset : offset + n], ts, dur)
        ts += dur
        offset += n


def _collector(rate, frame_ms, padding_ms, vad, frames):
    ring = collections.deque(maxlen=int(padding_ms / frame_ms))
    triggered, voiced = False, []
    for fr in frames:
        if not triggered:
            ring.append(fr)
            if len([f for f in ring if vad.is_speech(f.bytes, rate)]) > 0.9 * ring.maxlen:
                triggered = True
                voiced.extend(ring)
                ring.clear()
        else:
            voiced.append(fr)
            ring.append(fr)
            if len([f for f in ring if not vad.is_speech(f.bytes, rate)]) > 0.9 * ring.maxlen:
                triggered = False
                yield b"".join(f.bytes for f in voiced)
                ring.clear()
                voiced = []
    if voiced:
        yield b"".join(f.bytes for f in voiced)


class _SphinxLogMel:
    """Per-frame loop of the Sphinx-style extractor (filters from vox3d.audio.fbank: same facts)."""

    def __init__(self) -> None:
        self.filters = fbank.mel_filterbank()
        self.win = np.hamming(fbank.WIN_LENGTH)
        self.prior = 0
        self.fshift = fbank.HOP
        self.wlen = fbank.WIN_LENGTH

    def pre_emphasis(self, frame):
        frame = np.insert(frame, 0, self.prior)
        self.prior = frame[-1]
        return frame[1:] - 0.97 * frame[:-1]

    def frame2logspec(self, frame):
        frame = self.pre_emphasis(frame) * self.win
        spec = np.fft.rfft(frame, fbank.N_FFT)
        power = spec.real * spec.real + spec.imag * spec.imag
        return np.log(np.dot(power, self.filters).clip(1e-5, np.inf))

    def sig2logspec(self, sig):
        nfr = int(len(sig) / self.fshift + 1)
        out = np.zeros((nfr, fbank.N_MELS), "d")
        fr = 0
        while fr < nfr:
            start = round(fr * self.fshift)
            end = min(len(sig), start + self.wlen)
            frame = sig[start:end]
            if len(frame) < self.wlen:
                frame = np.resize(frame, self.wlen)
            out[fr] = self.frame2logspec(frame)
            fr += 1
        return out


def original_style(wav: str, out_npy: str, tmp: str) -> None:
    """One utterance the original way: WAV file in, .npy file out."""
    import webrtcvad
    from scipy.io import wavfile

    vad = webrtcvad.Vad(2)
    audio, rate = _read_wave(wav)
    segments = _collector(rate, 20, 50, vad, list(_frames(20, audio, rate)))
    seg_dir = os.path.join(tmp, "seg")
    if os.path.exists(seg_dir):
        shutil.rmtree(seg_dir)
    os.makedirs(seg_dir)
    data = []
    for i, seg in enumerate(segments):
        p = os.path.join(seg_dir, f"{i}.wav")
        _write_wave(p, seg, rate)
        data.append(wavfile.read(p)[1])
    shutil.rmtree(seg_dir)
    voice = np.concatenate(data).astype("int16")
    fb = _SphinxLogMel().sig2logspec(voice).astype("float32")
    fb = fb - fb.mean(axis=0)
    fb = fb / (fb.std(axis=0) + np.finfo(np.float32).eps)
    n0 = fb.shape[0]
    while fb.shape[0] < 1000:
        fb = np.append(fb, fb[0:n0], axis=0)
        fb = fb[0:1000, :]
    np.save(out_npy, fb)


def _write_extract_shard(path: Path, items: list[tuple[str, str, np.ndarray]]) -> None:
    """An extract shard (vox3d.media.extract_shard layout) holding only audio, for the stage timing."""
    from vox3d.media import extract_shard

    s = h5py.string_dtype("utf-8")
    lens = np.array([len(a) for _, _, a in items], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    n = len(items)
    cols = {
        "video": [v for v, _, _ in items],
        "identity": [i for _, i, _ in items],
        "duration_s": lens / 16000.0,
        "audio_offset": offs,
        "audio_length": lens,
        "frame_offset": np.zeros(n, np.int64),
        "frame_count": np.zeros(n, np.int64),
        "height": np.zeros(n, np.int64),
        "width": np.zeros(n, np.int64),
        "av_offset": np.zeros(n),
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
        f.create_dataset("audio", data=np.concatenate([a for _, _, a in items]).astype(np.float32))
        f.create_dataset("frame_times", data=np.zeros(0))
        f.create_group("frames")
        for k, dt in extract_shard.INDEX.items():
            f.create_dataset(k, data=np.array(cols[k], dtype=s if dt == "str" else dt))
        g = f.create_group("rejects")
        for k in ("path", "code", "reason"):
            g.create_dataset(k, data=np.array([], dtype=s))


def bench_rtf(tmp: Path, repeats: int) -> None:
    wavs = sorted((CMP_DIR / "reference_fbank").glob("*.wav"))
    for flac in sorted((DATA_ROOT / "real" / "librispeech").glob("*/*/*.flac")):
        pcm, sr = sf.read(flac, dtype="int16")
        p = tmp / f"{flac.stem}.wav"
        sf.write(p, pcm, sr, subtype="PCM_16")
        wavs.append(p)
    # a shard-sized corpus: every recording 3 times (19 recordings: 57 utterances; shards hold
    # 64 videos)
    wavs = [w for w in wavs for _ in range(3)]
    items = []
    seconds = 0.0
    for k, w in enumerate(wavs):
        pcm, sr = sf.read(w, dtype="int16")
        seconds += pcm.size / sr
        items.append((f"{w.stem}/yt/{k:05d}.mp4", w.stem, pcm.astype(np.float32) / 32768.0))
    ex = tmp / "extract.h5"
    _write_extract_shard(ex, items)

    gzip_cfg = fbank.FeatureConfig(compression="gzip")
    lzf_cfg = fbank.FeatureConfig(compression="lzf")
    f64_cfg = fbank.FeatureConfig(precision="float64")
    jobs = {
        "loop": lambda: [
            original_style(str(w), str(tmp / f"{w.stem}.npy"), str(tmp)) for w in wavs
        ],
        "none": lambda: features.features_shard(ex, tmp / "features.h5", progress=False),
        "gzip": lambda: features.features_shard(ex, tmp / "fg.h5", gzip_cfg, progress=False),
        "lzf": lambda: features.features_shard(ex, tmp / "fl.h5", lzf_cfg, progress=False),
        "f64": lambda: features.features_shard(ex, tmp / "f64.h5", f64_cfg, progress=False),
        "procs2": lambda: features.features_shard(ex, tmp / "f2.h5", progress=False, workers=2),
        "core": lambda: [fbank.utterance_features(a) for _, _, a in items],
    }
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for job in jobs.values():  # warm-up: imports, filter/window caches, page cache
        job()
    load0 = os.getloadavg()[0]
    for _ in range(repeats):  # interleaved, median of `repeats` each (the machine is shared)
        for k, job in jobs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            job()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    diff = 0.0
    store = FeatureStore([str(tmp / "features.h5")], mode="eval")
    for i, u in enumerate(store.utterances):
        ref = np.load(tmp / f"{u.split('/')[0]}.npy")
        diff = max(diff, float(np.abs(store[i][0].numpy() - ref).max()))
    load1 = os.getloadavg()[0]
    bw = {k: statistics.median(v) for k, v in wall.items()}
    bc = {k: statistics.median(v) for k, v in cpu.items()}
    sizes = {
        k: (tmp / f).stat().st_size / 1e6
        for k, f in (("none", "features.h5"), ("gzip", "fg.h5"), ("lzf", "fl.h5"))
    }
    print(
        f"\n## 1. real-time factor ({len(wavs)} utterances, {seconds:.1f} s of speech, "
        f"median of {repeats}, load average {load0:.1f} -> {load1:.1f}; x = seconds of audio "
        "per second; one core unless noted)"
    )
    print(f"{'':46s} {'wall s':>7} {'x RT':>6} {'vs loop':>7} | {'CPU s':>6} {'vs loop':>7}")
    rows = (
        ("loop", "original-style loop (wav in, npy out)"),
        ("none", f"our stage, h5 -> h5, none (default) {sizes['none']:.1f} MB"),
        ("gzip", f"our stage, h5 -> h5, gzip:1+shuffle {sizes['gzip']:.1f} MB"),
        ("lzf", f"our stage, h5 -> h5, lzf+shuffle {sizes['lzf']:.1f} MB"),
        ("f64", "our stage, none, precision float64 (bit-exact)"),
        ("procs2", "our stage, default, 2 worker processes"),
        ("core", "our features alone (no file I/O)"),
    )
    for k, label in rows:
        cpu_col = "   (children)" if k == "procs2" else f"{bc[k]:6.3f} {bc['loop'] / bc[k]:6.1f}x"
        print(
            f"{label:46s} {bw[k]:7.3f} {seconds / bw[k]:5.0f}x {bw['loop'] / bw[k]:6.1f}x | "
            f"{cpu_col}"
        )
    print("target: >= 5x the loop, the stage with its defaults (row 2); all runs per row: ")
    for k, _ in rows:
        print(f"  {k:7s} wall " + " ".join(f"{t:.3f}" for t in wall[k]))
    diff64 = 0.0
    store64 = FeatureStore([str(tmp / "f64.h5")], mode="eval")
    for i, u in enumerate(store64.utterances):
        ref = np.load(tmp / f"{u.split('/')[0]}.npy")
        diff64 = max(diff64, float(np.abs(store64[i][0].numpy() - ref).max()))
    print(
        f"max |ours - loop| over all stored arrays: {diff:.3g} (default, float32 spectra); "
        f"{diff64:.3g} (precision float64)"
    )


# --------------------------------------------------------------------------------------
# 2-4. layout and reader
# --------------------------------------------------------------------------------------
def _corpus(n_ids: int = 40, per_id: int = 4, seed: int = 0) -> list[features.Utterance]:
    """Realistic features: windows of real CMP log-mel arrays, 400-1300 frames each."""
    real = [
        fbank.cmp_features(sf.read(w, dtype="int16")[0])
        for w in sorted((CMP_DIR / "reference_fbank").glob("*.wav"))
    ]
    pool = np.concatenate(real)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_ids):
        for j in range(per_id):
            t = int(rng.integers(400, 1300))
            s = int(rng.integers(0, pool.shape[0] - t))
            x = np.ascontiguousarray(pool[s : s + t])
            f = fbank.UtteranceFeatures(x, np.zeros(64, np.float32), np.ones(64, np.float32), t)
            out.append(features.Utterance(f"id{i:05d}/yt/{j:05d}.mp4", f"id{i:05d}", f))
    return out


def _crops_per_s(store: FeatureStore, n: int) -> float:
    store[0]
    t0 = time.perf_counter()
    for i in range(n):
        store[i]
    return n / (time.perf_counter() - t0)


def bench_layout(tmp: Path, kept: list, n_reads: int) -> None:
    print("\n## 2. frames layout: file size, random 300-800-frame crops read from the file")
    print(
        f"{'chunk rows':>10} {'compression':>12} {'MB':>7} {'crops/s':>9} {'load s':>7} "
        f"{'write s':>7}"
    )
    cfg = fbank.FeatureConfig()
    for rows in (128, 256, 512, 2048):
        for comp, opts in ((None, None), ("lzf", None), ("gzip", 1), ("gzip", 4)):
            p = tmp / f"layout_{rows}_{comp}_{opts}.h5"
            t0 = time.perf_counter()
            features.write(
                p, kept, [], cfg, chunk_frames=rows, compression=comp, compression_opts=opts
            )
            write_s = time.perf_counter() - t0
            store = FeatureStore([str(p)], items_per_epoch=n_reads, batch_size=64, cache=False)
            rate = _crops_per_s(store, n_reads)
            t0 = time.perf_counter()
            FeatureStore([str(p)], mode="eval")[0]
            load = time.perf_counter() - t0
            name = "none" if comp is None else f"{comp}{'' if opts is None else ':' + str(opts)}"
            mark = (
                " <- default"
                if (rows, comp) == (features.CHUNK_FRAMES, features.COMPRESSION)
                else ""
            )
            print(
                f"{rows:>10} {name:>12} {p.stat().st_size / 1e6:7.2f} {rate:9.0f} {load:7.3f} "
                f"{write_s:7.3f}{mark}"
            )


def bench_float16(tmp: Path, kept: list) -> None:
    a, b = tmp / "f32.h5", tmp / "f16.h5"
    features.write(a, kept, [], fbank.FeatureConfig())
    features.write(b, kept, [], fbank.FeatureConfig(float16=True))
    with h5py.File(a) as fa, h5py.File(b) as fb:
        x32 = fa["frames"][()]
        x16 = fb["frames"][()].astype(np.float32)
    err = np.abs(x16 - x32)
    print("\n## 3. float16 storage")
    print(f"size float32 {a.stat().st_size / 1e6:.2f} MB, float16 {b.stat().st_size / 1e6:.2f} MB")
    print(
        f"max abs error {err.max():.2e}, mean {err.mean():.2e}, "
        f"max relative {np.max(err / np.maximum(np.abs(x32), 1e-3)):.2e} "
        f"(values in [{x32.min():.1f}, {x32.max():.1f}])"
    )


def _loader_rate(make, n_items: int) -> tuple[float, int]:
    """crops/s of iterating ``make()`` (start-up and first batch not counted), and how many
    batches came in fresh memory (BatchLoader only)."""
    loader = make()
    it = iter(loader)
    next(it)  # start-up (worker start, cache load) not counted
    t0 = time.perf_counter()
    n = 0
    for _, y in it:
        n += len(y)
    rate = n / (time.perf_counter() - t0)
    return rate, int(getattr(loader, "fresh_batches", 0))


def bench_reader(tmp: Path, kept: list, n_items: int, repeats: int) -> None:
    from torch.utils.data import DataLoader

    from vox3d.audio.batch_loader import BatchLoader

    p = tmp / "reader.h5"
    features.write(p, kept, [], fbank.FeatureConfig())

    def store():
        return FeatureStore([str(p)], items_per_epoch=n_items, batch_size=64, seed=0)

    def map_style(workers):
        return DataLoader(
            store(),
            batch_size=64,
            num_workers=workers,
            collate_fn=collate,
            worker_init_fn=FeatureStore.worker_init_fn,
        )

    cases = {
        "batch0": ("BatchLoader, 0 workers", lambda: BatchLoader(store(), num_workers=0)),
        "batch2": ("BatchLoader, 2 workers", lambda: BatchLoader(store(), num_workers=2)),
        "map0": ("map-style DataLoader + collate, 0 workers", lambda: map_style(0)),
        "map2": ("map-style DataLoader + collate, 2 workers", lambda: map_style(2)),
    }
    rates: dict[str, list[float]] = {k: [] for k in cases}
    fresh: dict[str, int] = {k: 0 for k in cases}
    item_rates = []
    load0 = os.getloadavg()[0]
    for _ in range(repeats):
        for k, (_, make) in cases.items():
            r, f = _loader_rate(make, n_items)
            rates[k].append(r)
            fresh[k] += f
        item_rates.append(_crops_per_s(store(), n_items))
    load1 = os.getloadavg()[0]
    print(
        f"\n## 4. random crops/s, batch 64, 300-800 frames, {len(kept)} utterances, in-memory "
        f"cache; {n_items // 64} batches, median of {repeats}, load average {load0:.1f} -> "
        f"{load1:.1f}"
    )
    for k, (label, _) in cases.items():
        runs = " ".join(f"{x:.0f}" for x in rates[k])
        extra = f", fresh-memory batches {fresh[k]}" if k.startswith("batch") else ""
        print(f"{label:44s}: {statistics.median(rates[k]):8.0f} crops/s  (runs {runs}{extra})")
    print(
        f"{'FeatureStore[i] loop (no batching)':44s}: {statistics.median(item_rates):8.0f} crops/s"
    )
    print("target: >= 20,000 crops/s with 0 and 2 workers (BatchLoader)")
    # what a worker of the map-style path pays to hand a batch over: fresh shared memory
    x = torch.empty(64, 550, 64)
    t0 = time.perf_counter()
    for _ in range(10):
        y = torch.empty(0).new(torch.UntypedStorage._new_shared(x.numel() * 4)).view(x.shape)
        y.copy_(x)
    shm = (time.perf_counter() - t0) / 10
    t0 = time.perf_counter()
    for _ in range(10):
        y = torch.empty(x.shape)
        y.copy_(x)
    plain = (time.perf_counter() - t0) / 10
    print(
        f"(a 9 MB batch into fresh shared memory: {shm * 1e3:.1f} ms; into ordinary memory: "
        f"{plain * 1e3:.1f} ms; BatchLoader's workers write into shared buffers made once)"
    )


# --------------------------------------------------------------------------------------
# 5. log-mel variants (the choices of vox3d.audio.fbank.filterbank_energies)
# --------------------------------------------------------------------------------------
def _cpu_median(jobs: dict, repeats: int) -> dict[str, float]:
    """CPU seconds (median of `repeats`, interleaved, after one warm-up) of each job."""
    for job in jobs.values():
        job()
    t: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, job in jobs.items():
            c0 = time.process_time()
            job()
            t[k].append(time.process_time() - c0)
    return {k: statistics.median(v) for k, v in t.items()}


def bench_logmel(repeats: int) -> None:
    import scipy.fft

    wavs = sorted((CMP_DIR / "reference_fbank").glob("*.wav"))
    pcms = [sf.read(w, dtype="int16")[0] for w in wavs]
    pcms += [
        sf.read(f, dtype="int16")[0]
        for f in sorted((DATA_ROOT / "real" / "librispeech").glob("*/*/*.flac"))
    ]
    voiced = [remove_silence(p) for p in pcms]
    shard = np.concatenate(voiced)
    n_fr = sum(fbank.n_frames(v.size) for v in voiced)
    saved = fbank.BLOCK_FRAMES
    passes = 5  # each timing: 5 passes over the recordings

    def blocks(n, precision="float64", sigs=voiced):
        def run():
            fbank.BLOCK_FRAMES = n
            try:
                for _ in range(passes):
                    [fbank.log_mel_energies(v, precision=precision) for v in sigs]
            finally:
                fbank.BLOCK_FRAMES = saved

        return run

    whole = 1 << 40
    jobs = {
        "blocked64": blocks(saved),
        "utt64": blocks(whole),
        "shard64": blocks(whole, sigs=[shard]),
        "blocked32": blocks(saved, "float32"),
        "utt32": blocks(whole, "float32"),
    }
    t = _cpu_median(jobs, repeats)
    print(
        f"\n## 5. log-mel energies of {len(voiced)} recordings' voiced audio "
        f"({n_fr} frames) x {passes}, CPU s, median of {repeats}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    rows = (
        ("blocked64", f"float64, blocks of {saved} frames (default)"),
        ("utt64", "float64, one rfft over all frames of an utterance"),
        ("shard64", "float64, one rfft over all frames of all recordings"),
        ("blocked32", f"float32 (scipy pocketfft), blocks of {saved} frames (default)"),
        ("utt32", "float32, one rfft over all frames of an utterance"),
    )
    for k, label in rows:
        print(f"{label:60s} {t[k]:7.3f} s  {t[k] / t['blocked64']:5.2f} of blocked float64")
    print(
        f"blocked vs one rfft per utterance: {100 * (1 - t['blocked64'] / t['utt64']):.0f}% less "
        f"CPU (float64), {100 * (1 - t['blocked32'] / t['utt32']):.0f}% (float32); float32 "
        f"spectra take {t['blocked32'] / t['blocked64']:.2f} of the float64 time"
    )

    # the FFT of one (128, 1024) block, and the filterbank product, by library and precision
    rng = np.random.default_rng(0)
    blk64 = np.zeros((saved, fbank.N_FFT))
    blk64[:, : fbank.WIN_LENGTH] = rng.standard_normal((saved, fbank.WIN_LENGTH)) * 3000
    blk32 = blk64.astype(np.float32)
    n_calls = 1000

    def loop(fn, x):
        def run():
            for _ in range(n_calls):
                fn(x, axis=1)

        return run

    fft = _cpu_median(
        {
            "numpy64": loop(np.fft.rfft, blk64),
            "numpy32": loop(np.fft.rfft, blk32),
            "scipy64": loop(scipy.fft.rfft, blk64),
            "scipy32": loop(scipy.fft.rfft, blk32),
        },
        repeats,
    )
    same = np.array_equal(np.fft.rfft(blk64, axis=1), scipy.fft.rfft(blk64, axis=1))
    print(f"rfft of a ({saved}, {fbank.N_FFT}) block, ms per call:")
    for k in ("numpy64", "numpy32", "scipy64", "scipy32"):
        ms = fft[k] / n_calls * 1e3
        print(
            f"  {k[:5]} float{k[5:]}: {ms:6.3f} ms  {fft['numpy64'] / fft[k]:5.2f}x numpy float64"
        )
    print(
        f"numpy float32 / float64 time: {fft['numpy32'] / fft['numpy64']:.1f}x; scipy float32 "
        f"{fft['numpy64'] / fft['scipy32']:.1f}x faster than numpy float64; scipy float64 "
        f"{'equal' if same else 'not equal'} to numpy float64"
    )
    sp, lo, hi = fbank._sparse_filters()
    dense = np.ascontiguousarray(fbank.mel_filterbank()[lo:hi])
    spec = np.fft.rfft(fbank.frame_signal(voiced[0]) * np.hamming(fbank.WIN_LENGTH), 1024)
    power = np.square(spec.real[:, lo:hi]) + np.square(spec.imag[:, lo:hi])
    prod = _cpu_median(
        {
            "sparse": lambda: [(sp @ power.T).T for _ in range(200)],
            "dense": lambda: [power @ dense for _ in range(200)],
        },
        repeats,
    )
    e_sp, e_de = (sp @ power.T).T, power @ dense
    rel = float(np.max(np.abs(e_de - e_sp) / np.maximum(np.abs(e_sp), 1e-300)))
    print(
        f"filterbank product of {power.shape[0]} frames: sparse {prod['sparse'] / 200 * 1e3:.3f} "
        f"ms, dense BLAS {prod['dense'] / 200 * 1e3:.3f} ms CPU "
        f"(dense / sparse {prod['dense'] / prod['sparse']:.2f}); max relative difference "
        f"{rel:.2g} ({'bit-identical' if rel == 0 else 'not bit-identical'})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and reads")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}, numpy {np.__version__}, "
        f"h5py {h5py.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="vox3d-bench-") as d:
        tmp = Path(d)
        bench_rtf(tmp, repeats=1 if a.quick else 3)
        kept = _corpus()
        bench_layout(tmp, kept, n_reads=500 if a.quick else 2000)
        bench_float16(tmp, kept)
        bench_reader(tmp, kept, n_items=64 * (40 if a.quick else 200), repeats=1 if a.quick else 3)
        bench_logmel(repeats=1 if a.quick else 3)


if __name__ == "__main__":
    main()
