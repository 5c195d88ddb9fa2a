"""Voice features exactly as the Cross-Modal Perceptionist (CMP) computes them.

This module is the one source of truth for every feature setting (:mod:`vox3d.audio.pcm` holds
the input's sample rate, :mod:`vox3d.audio.vad` the voice activity settings).  The pipeline
(facts of the original code, github.com/choyingw/Cross-Modal-Perceptionist commit 5191c37:
``vad.py``, ``mfcc.py`` and ``rm_sil`` / ``get_fbank`` of ``demo_mic.py``; the same steps
as reconstructing-faces-from-voices) is re-implemented here, vectorised:

1. **Input** (:mod:`vox3d.audio.pcm`): 16 kHz mono 16-bit PCM (``int16``, not scaled to +-1).
   Float audio is quantised as ``clip(rint(x * 32768))`` (what ffmpeg's float -> s16
   conversion does).
2. **Voice activity** (:func:`vox3d.audio.vad.vad_keep_frames`, whose module doc has the exact
   collector semantics): webrtcvad aggressiveness 2 on 20 ms frames (320 samples), a
   2-frame ring buffer classified on every frame, segments concatenated.
3. **Log-mel** (:func:`log_mel_energies`, the Sphinx ``MFCC`` class configured as
   ``MFCC(nfilt=64, lowerf=20., upperf=7200., samprate=16000, nfft=1024, wlen=0.025)``):
   64 triangular filters 20-7200 Hz on the mel scale ``2595 log10(1 + f/700)``, edges
   equally spaced in mel and rounded (half to even) to FFT bins of 15.625 Hz; each
   triangle's peak height is ``2 / (width in Hz)``.  Frames of 400 samples
   (``int(0.025 * 16000)``) every 160 samples, ``int(len / 160 + 1)`` frames; frames that
   run past the end are filled cyclically with their own samples (``numpy.resize``).
   Pre-emphasis 0.97 *per frame*: the first sample of frame i uses the *last* sample of
   frame i-1 as its predecessor (0 for the first frame; a fresh extractor per utterance).
   Hamming window (numpy), ``|rfft(frame, 1024)|^2``, filterbank, ``log(max(x, 1e-5))``;
   float64, then float32.
4. **Normalisation** (:func:`normalize`): per band subtract the mean over frames, divide
   by ``std + float32 eps`` (population std of the centred array), in float32.
5. **Stored length** (:func:`repeat_frames`): shorter than 1000 frames -> the array is
   tiled and cut to exactly 1000 frames; longer arrays are kept whole.  Our HDF5 feature
   shards store step 4 (unrepeated); the reader repeats.

MFCC option (``kind="mfcc"``): the same VAD, framing and filterbank energies, converted to
dB (``librosa.power_to_db(E, ref=1.0, amin=1e-5, top_db=None)`` = ``10 log10(max(E,
1e-5))``) and transformed with ``librosa.feature.mfcc(S=..., n_mfcc=n_mfcc, dct_type=2,
norm="ortho", lifter=0)``; then normalised per coefficient as in step 4.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field

import numpy as np

from vox3d import __version__
from vox3d.audio.pcm import PCM_SCALE, SAMPLE_RATE, BadAudio, condition
from vox3d.audio.vad import (
    VAD_AGGRESSIVENESS,
    VAD_FRAME_MS,
    VAD_PADDING_MS,
    VAD_RATIO,
    remove_silence,
)
from vox3d.config import Settings, default, setting

# --------------------------------------------------------------------------------------
# Settings (CMP's, do not change: they define the feature format)
# --------------------------------------------------------------------------------------
#: Mel filterbank.
N_MELS = 64
F_MIN = 20.0
F_MAX = 7200.0
N_FFT = 1024
#: Frames per second (hop = SAMPLE_RATE / FRAME_RATE = 160.0 samples, 10 ms).
FRAME_RATE = 100
HOP = SAMPLE_RATE / FRAME_RATE
#: Window length in samples: int(0.025 * 16000) = 400 (25 ms).
WIN_LENGTH = int(0.025 * SAMPLE_RATE)
PREEMPHASIS = 0.97
#: Floor of the filterbank energies before the natural log.
LOG_FLOOR = 1e-5
#: Added to the per-band std in the normalisation (float32 machine epsilon).
NORM_EPS = float(np.finfo(np.float32).eps)
#: Stored arrays shorter than this are tiled to exactly this many frames.
MIN_STORED_FRAMES = 1000
#: Format name/version written into every feature file.
FORMAT = "vox3d.features/1"


@dataclass(frozen=True)
class FeatureConfig(Settings):
    """The configurable part of the feature stage (config ``features:`` section; defaults:
    config.yaml's).

    kind: ``logmel`` (CMP's 64 bands) or ``mfcc`` (``n_mfcc`` coefficients, see module doc).
    float16: store frames as float16 in the HDF5 shards (reader returns float32).
    min_voiced_s: reject utterances with less voiced audio after VAD (seconds).
    max_clipped: reject utterances with more than this fraction of samples at full scale.
    max_dc: above this mean level (fraction of full scale) the mean is removed before VAD.
    compression: HDF5 filter of the stored frames: ``none`` (default: fastest to write and
        read, any HDF5 tool), ``gzip`` (level 1 + shuffle: 15 % smaller, ~4x slower to
        write) or ``lzf`` (h5py's filter + shuffle: 11 % smaller); bench/features.py.
    precision: arithmetic of the windowed frames and their spectra: ``float32`` (about half the spectrum time; stored features within 3.3e-5 of the original's arrays, in
        bench/features.py and tests/test_fbank.py) or ``float64`` (the original's
        arithmetic: bit-identical to its arrays).
    """

    SECTION = "features"

    kind: str = setting("features.kind")
    n_mfcc: int = setting("features.n_mfcc")
    float16: bool = setting("features.float16")
    min_voiced_s: float = setting("features.min_voiced_s")
    max_clipped: float = setting("features.max_clipped")
    max_dc: float = setting("features.max_dc")
    compression: str = setting("features.compression")
    precision: str = setting("features.precision")

    def __post_init__(self) -> None:
        if self.precision not in ("float32", "float64"):
            raise ValueError(
                f"features.precision must be float32 or float64, not {self.precision!r}"
            )
        if self.kind not in ("logmel", "mfcc"):
            raise ValueError(f"features.kind must be 'logmel' or 'mfcc', not {self.kind!r}")
        if self.compression not in ("gzip", "lzf", "none"):
            raise ValueError(
                f"features.compression must be gzip, lzf or none, not {self.compression!r}"
            )
        if not 1 <= self.n_mfcc <= N_MELS:
            raise ValueError(f"features.n_mfcc must be in 1..{N_MELS}, not {self.n_mfcc}")

    @classmethod
    def from_mapping(cls, m: dict | None) -> FeatureConfig:
        """From a config ``features:`` mapping (unknown keys are an error)."""
        return cls.from_section(m)

    @property
    def n_features(self) -> int:
        """Width D of a feature frame."""
        return N_MELS if self.kind == "logmel" else self.n_mfcc

    def attrs(self) -> dict[str, object]:
        """Every setting that shapes a feature file, for HDF5 attributes."""
        a: dict[str, object] = {
            "format": FORMAT,
            "sample_rate": SAMPLE_RATE,
            "vad": "webrtcvad",
            "vad_aggressiveness": VAD_AGGRESSIVENESS,
            "vad_frame_ms": VAD_FRAME_MS,
            "vad_padding_ms": VAD_PADDING_MS,
            "vad_ratio": VAD_RATIO,
            "vad_repeated_calls": True,
            "n_mels": N_MELS,
            "f_min": F_MIN,
            "f_max": F_MAX,
            "n_fft": N_FFT,
            "hop_length": HOP,
            "win_length": WIN_LENGTH,
            "window": "hamming",
            "preemphasis": PREEMPHASIS,
            "preemphasis_prior": "last sample of previous frame; 0 at utterance start",
            "log": "natural",
            "log_floor": LOG_FLOOR,
            "norm": "per utterance, per band: (x - mean) / (std + eps), ddof 0, float32",
            "norm_eps": NORM_EPS,
            "repeat_to": MIN_STORED_FRAMES,
            "repeated": False,
            "n_features": self.n_features,
        }
        a.update({k: v for k, v in asdict(self).items()})
        if self.kind == "mfcc":
            a["mfcc"] = (
                "librosa.feature.mfcc(S=librosa.power_to_db(E, ref=1.0, amin=1e-5, "
                f"top_db=None), n_mfcc={self.n_mfcc}, dct_type=2, norm='ortho', lifter=0)"
            )
        a.update(package_versions())
        return a


def package_versions() -> dict[str, str]:
    """Versions of the packages that compute the features (HDF5 attributes)."""
    from importlib import metadata

    out = {"version_vox3d": __version__, "version_numpy": np.__version__}
    for dist in ("webrtcvad-wheels", "librosa", "soxr", "h5py"):
        try:
            out["version_" + dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out["version_" + dist.replace("-", "_")] = "absent"
    return out


def keep_freed_memory() -> bool:
    """Tune glibc malloc for the vectorised pipeline (process-wide; call in workers).

    Allocations up to 32 MiB come from the heap and freed memory is not returned to the
    system, so the large per-utterance temporaries reuse memory instead of faulting in
    fresh pages every time.  In VMs that hand freed pages back to the host, fresh pages
    are expensive: this halves the log-mel time here (bench/features.py).  Returns True
    when applied (glibc only; a no-op elsewhere).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
        return bool(ok)
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------
# Log-mel filterbank energies
# --------------------------------------------------------------------------------------
def mel(f: np.ndarray | float) -> np.ndarray | float:
    """Hz -> mel, ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_inv(m: np.ndarray | float) -> np.ndarray | float:
    """mel -> Hz."""
    return 700.0 * (np.power(10.0, np.asarray(m, np.float64) / 2595.0) - 1.0)


def filter_bins() -> np.ndarray:
    """(N_MELS + 2,) int FFT-bin edges of the triangles (left, centre, right chains)."""
    dfreq = SAMPLE_RATE / N_FFT
    mmin, mmax = mel(F_MIN), mel(F_MAX)
    step = (mmax - mmin) / (N_MELS + 1)
    edges_hz = mel_inv(mmin + step * np.arange(N_MELS + 2, dtype=np.float64))
    return np.rint(edges_hz / dfreq).astype(np.int64)  # rint: round half to even


def mel_filterbank() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) float64 triangular filters (peak 2 / width in Hz)."""
    dfreq = SAMPLE_RATE / N_FFT
    bins = filter_bins()
    fb = np.zeros((N_FFT // 2 + 1, N_MELS), np.float64)
    for j in range(N_MELS):
        left, centre, right = (int(b) for b in bins[j : j + 3])
        if right == left:
            raise ValueError(f"mel filter {j} has zero width")
        height = 2.0 / ((right - left) * dfreq)
        if centre != left:
            up = height / (centre - left)
            for q in range(left + 1, centre):
                fb[q, j] = (q - left) * up
        fb[centre, j] = height
        if centre != right:
            down = height / (centre - right)
            for q in range(centre + 1, right):
                fb[q, j] = (q - right) * down
    return fb


#: The constants below are built on first use, under one lock: the stream stage computes
#: features in several decode threads at once (vox3d.fitting.stream), and a thread must never see
#: one constant set and the next not yet.
_CONSTANTS_LOCK = threading.Lock()
_FILTERS_WINDOW: tuple[np.ndarray, np.ndarray] | None = None
_SPARSE: tuple[object, int, int] | None = None
_SPARSE32: object | None = None  # the same filters in float32


def _filters_and_window() -> tuple[np.ndarray, np.ndarray]:
    """(513, 64) float64 mel filters and the (400,) float64 Hamming window."""
    global _FILTERS_WINDOW
    if _FILTERS_WINDOW is None:
        with _CONSTANTS_LOCK:
            if _FILTERS_WINDOW is None:
                _FILTERS_WINDOW = (mel_filterbank(), np.hamming(WIN_LENGTH))
    return _FILTERS_WINDOW


def _sparse_filters(single: bool = False) -> tuple[object, int, int]:
    """(64, hi - lo) CSR matrix of the filters over the bins [lo, hi) they touch (float32
    with ``single``, else float64)."""
    global _SPARSE, _SPARSE32
    if _SPARSE is None or (single and _SPARSE32 is None):
        fb, _ = _filters_and_window()
        with _CONSTANTS_LOCK:
            if _SPARSE is None:
                from scipy import sparse

                nz = np.nonzero(fb.any(axis=1))[0]
                lo, hi = int(nz[0]), int(nz[-1]) + 1
                _SPARSE = (sparse.csr_matrix(fb[lo:hi].T), lo, hi)
            if single and _SPARSE32 is None:
                _SPARSE32 = _SPARSE[0].astype(np.float32)
    sp, lo, hi = _SPARSE
    return (_SPARSE32 if single else sp), lo, hi


def n_frames(n_samples: int) -> int:
    """Number of log-mel frames for a signal: ``int(n / 160 + 1)``."""
    return int(n_samples / HOP + 1)


def _framing(sig: np.ndarray, prior: float = 0.0) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """The parts of the original's pre-emphasised frames, without building them all.

    Returns ``(full, n_full, first, tail)``: ``full`` (n_full, WIN_LENGTH) float64, a
    strided *view* of the signal-level pre-emphasis ``y[j] = x[j] - 0.97 x[j-1]`` at every
    full frame (frames that lie inside the signal come first); its column 0 is wrong and is
    replaced by ``first`` (nfr,), each frame's first sample pre-emphasised with its prior
    (the previous frame's last raw sample; ``prior`` for frame 0); ``tail`` (nfr - n_full,
    WIN_LENGTH) the frames that run past the end, filled cyclically (numpy.resize; an empty
    one is zeros), complete.
    """
    x = np.asarray(sig).astype(np.float64)
    length = x.size
    nfr = n_frames(length)
    starts = np.rint(np.arange(nfr) * HOP).astype(np.int64)
    n_full = int(np.count_nonzero(starts + WIN_LENGTH <= length))  # full frames come first
    last = np.empty(nfr, np.float64)  # last raw sample of every frame
    first_raw = np.empty(nfr, np.float64)
    if n_full:
        y = np.empty_like(x)
        y[0] = x[0]
        np.subtract(x[1:], PREEMPHASIS * x[:-1], out=y[1:])
        windows = np.lib.stride_tricks.sliding_window_view(y, WIN_LENGTH)
        hop = int(HOP)
        if hop == HOP and np.array_equal(starts[:n_full], hop * np.arange(n_full)):
            full = windows[::hop][:n_full]  # a view: no copy of the frames
        else:  # pragma: no cover - a fractional hop (not CMP's 160 samples)
            full = windows[starts[:n_full]]
        last[:n_full] = x[starts[:n_full] + WIN_LENGTH - 1]
        first_raw[:n_full] = x[starts[:n_full]]
    else:
        full = np.zeros((0, WIN_LENGTH), np.float64)
    tail = np.empty((nfr - n_full, WIN_LENGTH), np.float64)
    for i in range(n_full, nfr):
        seg = x[starts[i] : length]
        raw = np.resize(seg, WIN_LENGTH) if seg.size else np.zeros(WIN_LENGTH)
        tail[i - n_full, 1:] = raw[1:] - PREEMPHASIS * raw[:-1]
        first_raw[i] = raw[0]
        last[i] = raw[-1]
    prev = np.empty(nfr, np.float64)
    prev[0] = prior
    prev[1:] = last[:-1]
    first = first_raw - PREEMPHASIS * prev
    tail[:, 0] = first[n_full:]
    return full, n_full, first, tail


def frame_signal(sig: np.ndarray, prior: float = 0.0) -> np.ndarray:
    """Pre-emphasised frames, (T, WIN_LENGTH) float64, exactly as the original forms them.

    sig: (S,) int16 (or float) samples.  prior: predecessor of the very first sample.
    Frames past the end are filled cyclically (numpy.resize); an empty tail frame is zeros.
    Inside a frame, sample j >= 1 is ``x[j] - 0.97 x[j-1]``, the same number as the
    signal-level pre-emphasis at that position, so full frames are gathered from one
    pre-emphasised signal and only their first sample is recomputed with its prior (the
    previous frame's last sample).  See :func:`_framing`.
    """
    full, n_full, first, tail = _framing(sig, prior)
    out = np.empty((first.size, WIN_LENGTH), np.float64)
    out[:n_full] = full
    out[n_full:] = tail
    out[:, 0] = first
    return out


#: Frames per block of the spectrum computation: a (128, 1024) float64 block and its
#: spectrum stay in the CPU cache (bench/features.py: ~15 % less CPU than one rfft call over
#: all frames of an utterance; one call over a whole shard is slower still).  Every frame's
#: numbers are the same for any block size.
BLOCK_FRAMES = 128


def filterbank_energies(
    sig: np.ndarray, prior: float = 0.0, precision: str = "float64"
) -> np.ndarray:
    """Mel filterbank energies ``|rfft(frame * hamming, 1024)|^2 @ filters``, (T, 64) float64.

    Computed in blocks of :data:`BLOCK_FRAMES` frames: each block is windowed straight from
    a strided view of the pre-emphasised signal (:func:`_framing`; the (T, 400) frames are
    never built) into a reused zero-padded (BLOCK_FRAMES, 1024) buffer, and the power is
    ``re * re + im * im`` of the spectrum's bins that the filters use.  Bit-identical to
    :func:`frame_signal` + one ``rfft(frames * window, 1024)`` (tests/test_fbank.py).
    ``precision="float32"``: the same steps in single precision (scipy's pocketfft, which
    has fast float32 kernels; numpy's float32 rfft is slower than its float64 one), returned
    as float32; energies within ~1e-5 relative, log-mel within ~1e-4 absolute of float64.
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, not {precision!r}")
    single = precision == "float32"
    if single:
        import scipy.fft

        dt, rfft = np.float32, scipy.fft.rfft
    else:
        dt, rfft = np.float64, np.fft.rfft
    _, window = _filters_and_window()
    win = window.astype(dt, copy=False)
    full, n_full, first, tail = _framing(sig, prior)
    # the filters are narrow triangles over bins [lo, hi): only those bins' power, and a
    # sparse product (no BLAS threads; ~1e-16 relative from the dense product's order)
    sp, lo, hi = _sparse_filters(single)
    t = first.size
    out = np.empty((t, N_MELS), dt)
    buf = np.zeros((min(BLOCK_FRAMES, t), N_FFT), dt)  # columns >= 400 stay 0
    for b in range(0, t, BLOCK_FRAMES):
        e = min(b + BLOCK_FRAMES, t)
        m = max(0, min(e, n_full) - b)  # rows of this block that are full frames
        block = buf[: e - b]
        if m:
            np.multiply(full[b : b + m], win, out=block[:m, :WIN_LENGTH], casting="same_kind")
        if m < e - b:
            np.multiply(
                tail[b + m - n_full : e - n_full], win, out=block[m:, :WIN_LENGTH],
                casting="same_kind",
            )  # fmt: skip
        np.multiply(first[b:e], window[0], out=block[:, 0], casting="same_kind")
        spec = rfft(block, axis=1)[:, lo:hi]
        power = np.square(spec.real) + np.square(spec.imag)
        out[b:e] = (sp @ power.T).T
    return out


def log_mel_energies(sig: np.ndarray, prior: float = 0.0, precision: str = "float64") -> np.ndarray:
    """CMP log-mel ``log(max(E, 1e-5))`` of a signal, (T, 64) float64 (before float32);
    ``precision`` of the spectra as :func:`filterbank_energies` (float32: a float32 array)."""
    e = filterbank_energies(sig, prior, precision)
    np.maximum(e, LOG_FLOOR, out=e)
    return np.log(e, out=e)


def mfcc_from_energies(energies: np.ndarray, n_mfcc: int) -> np.ndarray:
    """MFCC (T, n_mfcc) float64 from filterbank energies (T, 64) through librosa."""
    import librosa

    db = librosa.power_to_db(energies.T, ref=1.0, amin=LOG_FLOOR, top_db=None)
    return librosa.feature.mfcc(S=db, n_mfcc=n_mfcc, dct_type=2, norm="ortho", lifter=0).T


def normalize(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CMP's per-utterance normalisation in float32.

    feats: (T, D).  Returns (normalised (T, D) float32, mean (D,), std (D,)) where std is
    the population std of the centred array (the divisor is ``std + NORM_EPS``).
    """
    f = np.asarray(feats, np.float32)
    mean = f.mean(axis=0)
    f = f - mean
    std = f.std(axis=0)
    f = f / (std + np.finfo(np.float32).eps)
    return f, mean, std


#: What the supervised voice model reads (config ``train.input_norm``): ``utterance``, CMP's
#: normalised frames (:func:`normalize`: each band's mean 0 and std 1 within the utterance),
#: or ``none``, the features as computed, which keep the utterance's long-term spectrum
#: (where the formants are) that the normalisation removes.  A model file without the field
#: was trained on ``utterance`` (:data:`CMP_INPUT_NORM`).
INPUT_NORMS = ("utterance", "none")
CMP_INPUT_NORM = INPUT_NORMS[0]


def model_input(
    frames: np.ndarray, mean: np.ndarray, std: np.ndarray, norm: str = CMP_INPUT_NORM
) -> np.ndarray:
    """The voice model's input from stored normalised frames ``(T, D)`` and their utterance's
    normalisation ``mean``, ``std`` ``(D,)`` (:func:`normalize`'s outputs): the frames
    themselves for ``utterance``; for ``none`` the features before normalisation,
    ``frames * (std + NORM_EPS) + mean`` (float32; in log-mel units, within float32 rounding
    of what :func:`normalize` was given).  Tiling (:func:`repeat_frames`) commutes with it."""
    if norm not in INPUT_NORMS:
        raise ValueError(f"input normalisation {norm!r}: choose from {INPUT_NORMS}")
    f = np.asarray(frames, np.float32)
    if norm == "utterance":
        return f
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    if m.shape != f.shape[1:] or s.shape != f.shape[1:]:
        raise ValueError(f"mean {m.shape} / std {s.shape} do not match frames {f.shape}")
    return (f * (s + np.float32(NORM_EPS)) + m).astype(np.float32)


def repeat_frames(feats: np.ndarray, n: int = MIN_STORED_FRAMES) -> np.ndarray:
    """Tile (T, D) along time and cut to exactly `n` frames when T < n; else unchanged."""
    t = feats.shape[0]
    if t == 0:
        raise ValueError("cannot repeat an empty feature array")
    if t >= n:
        return feats
    return np.resize(feats, (n,) + feats.shape[1:])


# --------------------------------------------------------------------------------------
# One utterance
# --------------------------------------------------------------------------------------
@dataclass
class UtteranceFeatures:
    """Features of one utterance (before the repeat to 1000 frames).

    frames: (T, D) float32 normalised features; mean, std: (D,) float32 of the
    normalisation (``prenorm = frames * (std + eps) + mean``); voiced_samples: samples kept
    by VAD; dc_offset: mean of the input (fraction of full scale; removed when above
    ``max_dc``); clipped: fraction of samples at full scale.
    """

    frames: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    voiced_samples: int
    dc_offset: float = 0.0
    clipped: float = 0.0
    notes: list[str] = field(default_factory=list)

    def stored(self) -> np.ndarray:
        """The array CMP stores (``preprocessed_MFCC/*.npy``): repeated to >= 1000 frames."""
        return repeat_frames(self.frames, MIN_STORED_FRAMES)


def cmp_features(
    pcm: np.ndarray, kind: str = default("features.kind"), n_mfcc: int = default("features.n_mfcc")
) -> np.ndarray:
    """The original pipeline end to end on 16 kHz int16: the stored (>= 1000, D) float32.

    Raises :class:`BadAudio` when VAD keeps nothing.
    """
    voiced = remove_silence(pcm)
    if voiced.size == 0:
        raise BadAudio("silence: voice activity detection found no speech")
    feats = _raw_features(voiced, kind, n_mfcc)
    return repeat_frames(normalize(feats)[0])


def _raw_features(
    voiced: np.ndarray, kind: str, n_mfcc: int, precision: str = "float64"
) -> np.ndarray:
    if kind == "logmel":
        return log_mel_energies(voiced, precision=precision).astype(np.float32, copy=False)
    e = filterbank_energies(voiced, precision=precision)
    return mfcc_from_energies(e, n_mfcc).astype(np.float32)


def utterance_features(
    audio: np.ndarray, sr: int = SAMPLE_RATE, cfg: FeatureConfig | None = None
) -> UtteranceFeatures:
    """Features of one utterance, or :class:`BadAudio` with a reason a person understands.

    audio: (S,) or (S, C) float in [-1, 1] or int16, any rate (resampled to 16 kHz, channels
    averaged).  Checks: empty, non-finite, clipped (> ``max_clipped`` of samples at full
    scale), DC offset (> ``max_dc``: the mean is removed, noted), silence (VAD keeps nothing),
    too short after VAD (< ``min_voiced_s``).
    """
    cfg = cfg or FeatureConfig()
    pcm = condition(audio, sr)
    notes: list[str] = []
    if sr != SAMPLE_RATE:
        notes.append(f"resampled from {sr} Hz")
    clipped = float(np.count_nonzero((pcm == 32767) | (pcm == -32768))) / pcm.size
    if clipped > cfg.max_clipped:
        raise BadAudio(
            f"clipped: {100 * clipped:.2f}% of samples at full scale "
            f"(limit {100 * cfg.max_clipped:.2f}%, features.max_clipped)"
        )
    dc = float(pcm.mean(dtype=np.float64)) / PCM_SCALE
    if abs(dc) > cfg.max_dc:
        shifted = pcm.astype(np.int32) - int(round(dc * PCM_SCALE))
        pcm = np.clip(shifted, -32768, 32767).astype(np.int16)
        notes.append(f"DC offset {dc:+.4f} of full scale removed")
    voiced = remove_silence(pcm)
    if voiced.size == 0:
        raise BadAudio(
            "silence: voice activity detection (webrtcvad, aggressiveness "
            f"{VAD_AGGRESSIVENESS}) found no speech in {pcm.size / SAMPLE_RATE:.2f} s"
        )
    voiced_s = voiced.size / SAMPLE_RATE
    if voiced_s < cfg.min_voiced_s:
        raise BadAudio(
            f"too short after voice activity detection: {voiced_s:.2f} s voiced "
            f"< {cfg.min_voiced_s:.2f} s (features.min_voiced_s)"
        )
    raw = _raw_features(voiced, cfg.kind, cfg.n_mfcc, cfg.precision)
    frames, mean, std = normalize(raw)
    if not np.all(np.isfinite(frames)):
        raise BadAudio("features are not finite")
    return UtteranceFeatures(frames, mean, std, int(voiced.size), dc, clipped, notes)


__all__ = [
    "FeatureConfig",
    "UtteranceFeatures",
    "cmp_features",
    "log_mel_energies",
    "mel_filterbank",
    "normalize",
    "repeat_frames",
    "utterance_features",
]
