"""Source-filter voice synthesiser for the synthetic corpus, and the face -> voice mapping.

Signal model (all at :data:`SAMPLE_RATE` = 16 kHz, float32 in [-1, 1]):

* **Source**: a Rosenberg glottal pulse train (opening ``0.5 (1 - cos)``, closing
  ``cos``, open quotient ``open_quotient``, speed quotient 2.5), differentiated (lip
  radiation).  Pulse epochs follow the F0 contour with per-period **jitter** (relative
  period perturbation, std ``jitter``) and **shimmer** (relative amplitude perturbation,
  std ``shimmer``); **breathiness** adds high-passed aspiration noise gated by the glottal
  flow.  Fricative onsets add band-passed noise.
* **F0 contour** (Hz): speaker mean ``f0_hz`` x per-utterance offset, in semitones a phrase
  declination (+1 -> -1.5 st over each phrase, scaled by ``f0_range_st / 2``), a pitch
  accent on some syllables (Gaussian bumps of ``N(0, f0_range_st / 2)`` st) and a
  phrase-final fall.  The ground-truth track is this contour sampled every 10 ms where the
  voicing amplitude is above 25% of its peak (0 elsewhere).
* **Filter**: a cascade of five second-order resonators (Klatt's form, unity gain at DC)
  with time-varying frequencies ``F_i(t) = vowel_i(t) * (VTL_REF_CM / vtl_cm) *
  formant_ratio_i`` (uniform tube scaling: formants scale inversely with vocal-tract
  length; ``formant_ratio`` is the per-speaker departure from a uniform tube) and
  bandwidths ``50 + 0.06 F`` Hz.  Vowel targets are Peterson & Barney's adult male means
  (:data:`VOWELS`, reference VTL 17.5 cm), smoothed over ~30 ms (coarticulation).
* **Prosody / pauses**: phrases of 0.7-2.0 s of syllables (CV or V, ``rate_syl_s``
  syllables per second) separated by 0.18-0.6 s pauses, with leading and trailing silence,
  so voice activity detection matters.  :attr:`Utterance.segments` are the phrases.
* **Room**: per recording session (video) an exponentially decaying noise impulse response
  (``rt60_s``, direct-to-reverberant ratio ``drr_db``) and coloured background noise at
  ``snr_db`` below the speech RMS.

Face -> voice (:func:`voice_from_identity`): an identity's :class:`VoiceParams` from its
standardised shape, its gender and per-identity noise, through a
:class:`vox3d.synthetic.voice_mapping.VoiceMapping`; the mapping's formulas and the story behind each
link, and the voice -> shape ceiling it implies, are :mod:`vox3d.synthetic.voice_mapping`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from vox3d.synthetic.voice_mapping import (
    BREATH_MEAN,
    F0_MEAN_HZ,
    OQ_MEAN,
    VTL_MEAN_CM,
    VoiceMapping,
)

#: Audio sample rate of everything synthesised here (Hz).
SAMPLE_RATE = 16000
#: Frame rate of the ground-truth F0 track (Hz; 10 ms hop).
F0_RATE = 100
#: Reference vocal-tract length of the vowel table (cm).
VTL_REF_CM = 17.5

#: Vowel formant targets F1-F4 (Hz), adult male (Peterson & Barney 1952 means; F4 3500),
#: with a jaw-openness value in [0, 1] used for lip sync.
VOWELS: dict[str, tuple[float, float, float, float, float]] = {
    # name: (F1, F2, F3, F4, openness)
    "i": (270.0, 2290.0, 3010.0, 3500.0, 0.25),
    "I": (390.0, 1990.0, 2550.0, 3500.0, 0.40),
    "E": (530.0, 1840.0, 2480.0, 3500.0, 0.60),
    "ae": (660.0, 1720.0, 2410.0, 3500.0, 0.85),
    "a": (730.0, 1090.0, 2440.0, 3500.0, 1.00),
    "O": (570.0, 840.0, 2410.0, 3500.0, 0.70),
    "U": (440.0, 1020.0, 2240.0, 3500.0, 0.40),
    "u": (300.0, 870.0, 2240.0, 3500.0, 0.30),
    "V": (640.0, 1190.0, 2390.0, 3500.0, 0.75),
    "3": (490.0, 1350.0, 1690.0, 3500.0, 0.50),
}
#: Fifth formant at the reference VTL (Hz).
F5_REF = 4500.0

#: Names of :meth:`VoiceParams.as_vector`'s entries, in order.
VOICE_PARAM_NAMES = (
    "vtl_cm",
    "f0_hz",
    "formant_ratio_1",
    "formant_ratio_2",
    "formant_ratio_3",
    "formant_ratio_4",
    "f0_range_st",
    "open_quotient",
    "jitter",
    "shimmer",
    "breathiness",
    "rate_syl_s",
)


@dataclass(frozen=True)
class VoiceParams:
    """One speaker's voice.  Units: cm, Hz, semitones, fractions, syllables per second."""

    vtl_cm: float
    f0_hz: float
    formant_ratio: tuple[float, float, float, float]
    f0_range_st: float
    open_quotient: float
    jitter: float
    shimmer: float
    breathiness: float
    rate_syl_s: float

    def as_vector(self) -> np.ndarray:
        """``(12,) float64`` in the order of :data:`VOICE_PARAM_NAMES`."""
        return np.array(
            [self.vtl_cm, self.f0_hz, *self.formant_ratio, self.f0_range_st,
             self.open_quotient, self.jitter, self.shimmer, self.breathiness, self.rate_syl_s],
            dtype=np.float64,
        )  # fmt: skip

    @classmethod
    def from_vector(cls, v: np.ndarray) -> VoiceParams:
        """Inverse of :meth:`as_vector`."""
        v = [float(x) for x in np.asarray(v).reshape(-1)]
        if len(v) != len(VOICE_PARAM_NAMES):
            raise ValueError(f"expected {len(VOICE_PARAM_NAMES)} voice values, got {len(v)}")
        return cls(v[0], v[1], (v[2], v[3], v[4], v[5]), *v[6:])


@dataclass(frozen=True)
class Room:
    """A recording session's acoustics: reverberation time (s), direct-to-reverberant ratio
    (dB) and background-noise level below the speech RMS (dB)."""

    rt60_s: float
    drr_db: float
    snr_db: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Room:
        """A mild room: RT60 0.15-0.45 s, DRR 6-14 dB, SNR 25-40 dB."""
        return cls(
            float(rng.uniform(0.15, 0.45)), float(rng.uniform(6, 14)), float(rng.uniform(25, 40))
        )


@dataclass
class Utterance:
    """One synthesised utterance.

    audio: ``(N,) float32`` at :data:`SAMPLE_RATE`; segments: ``(S, 2) float64`` seconds,
    the speech phrases (voiced intervals, consonant onsets included); f0: ``(F,) float32``
    Hz at :data:`F0_RATE` (frame ``i`` at ``i / F0_RATE`` s; 0 = unvoiced); voicing:
    ``(N,) float32`` voicing amplitude in [0, 1]; openness: ``(N,) float32`` jaw openness
    in [0, 1] (voicing x vowel openness, smoothed), the lip-sync driver.
    """

    audio: np.ndarray
    segments: np.ndarray
    f0: np.ndarray
    voicing: np.ndarray
    openness: np.ndarray
    f0_offset: float = 1.0

    def openness_at(self, fps: float, n_frames: int) -> np.ndarray:
        """Jaw openness ``(n_frames,) float32`` averaged over each video frame's interval."""
        return _frame_average(self.openness, fps, n_frames)

    def voicing_at(self, fps: float, n_frames: int) -> np.ndarray:
        """Voicing amplitude ``(n_frames,) float32`` averaged over each video frame."""
        return _frame_average(self.voicing, fps, n_frames)


def _frame_average(x: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    edges = np.round(np.arange(n_frames + 1) * SAMPLE_RATE / fps).astype(np.int64)
    edges = np.clip(edges, 0, len(x))
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    n = np.maximum(edges[1:] - edges[:-1], 1)
    return ((c[edges[1:]] - c[edges[:-1]]) / n).astype(np.float32)


# --------------------------------------------------------------------------- source


def rosenberg_flow(phase: np.ndarray, open_quotient: float, speed_quotient: float = 2.5):
    """Rosenberg glottal flow of one period at ``phase`` in [0, 1) -> flow in [0, 1].

    Opening ``0.5 (1 - cos(pi p / Tp))`` for ``p < Tp``, closing ``cos(pi/2 (p - Tp) / Tn)``
    for ``Tp <= p < Tp + Tn``, closed after, with ``Tp + Tn = open_quotient`` and
    ``Tp / Tn = speed_quotient``.
    """
    tp = open_quotient * speed_quotient / (1.0 + speed_quotient)
    tn = open_quotient / (1.0 + speed_quotient)
    out = np.zeros_like(phase)
    rise = phase < tp
    out[rise] = 0.5 * (1.0 - np.cos(np.pi * phase[rise] / tp))
    fall = (phase >= tp) & (phase < tp + tn)
    out[fall] = np.cos(0.5 * np.pi * (phase[fall] - tp) / tn)
    return out


def pulse_epochs(f0: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Glottal epochs (sample positions, float64) for a per-sample F0 contour ``(N,)`` Hz,
    each period ``1 / f0(t_k)`` perturbed by ``(1 + jitter * N(0, 1))``."""
    n = len(f0)
    # Upper bound on the number of periods; draw the perturbations at once.
    k_max = int(np.ceil(n / SAMPLE_RATE * max(float(f0.max()), 1.0) * 1.2)) + 4
    jit = 1.0 + jitter * np.clip(rng.standard_normal(k_max), -3, 3)
    epochs = np.empty(k_max)
    t, k = 0.0, 0
    while t < n and k < k_max:
        epochs[k] = t
        t += SAMPLE_RATE / float(f0[min(int(t), n - 1)]) * jit[k]
        k += 1
    return epochs[:k]


def glottal_source(
    f0: np.ndarray,
    open_quotient: float,
    jitter: float,
    shimmer: float,
    breathiness: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Differentiated glottal flow with jitter, shimmer and aspiration noise.

    f0: ``(N,)`` Hz per sample.  Returns ``(source (N,), flow (N,))`` float64.
    """
    n = len(f0)
    epochs = pulse_epochs(f0, jitter, rng)
    periods = np.diff(np.append(epochs, max(float(n), epochs[-1] + 1)))
    amp = 1.0 + shimmer * np.clip(rng.standard_normal(len(epochs)), -3, 3)
    t = np.arange(n, dtype=np.float64)
    k = np.clip(np.searchsorted(epochs, t, side="right") - 1, 0, len(epochs) - 1)
    phase = np.clip((t - epochs[k]) / periods[k], 0.0, 0.999999)
    flow = rosenberg_flow(phase, open_quotient) * amp[k]
    dflow = np.diff(flow, prepend=0.0)
    # Aspiration: high-passed white noise, gated by the flow (louder while open).
    b, a = signal.butter(2, 1500 / (SAMPLE_RATE / 2), btype="high")
    asp = signal.lfilter(b, a, rng.standard_normal(n))
    scale = np.std(dflow) + 1e-12
    src = dflow + breathiness * scale * asp * (0.3 + flow)
    return src, flow


# --------------------------------------------------------------------------- filter


def formant_cascade(x: np.ndarray, freqs: np.ndarray, block: int = 64) -> np.ndarray:
    """Cascade of second-order resonators with time-varying centre frequencies.

    x: ``(N,)`` excitation; freqs: ``(N, R)`` Hz per sample.  Each resonator is Klatt's
    ``y[n] = A x[n] + B y[n-1] + C y[n-2]`` with ``C = -exp(-2 pi bw T)``,
    ``B = 2 exp(-pi bw T) cos(2 pi f T)``, ``A = 1 - B - C`` (unity gain at DC), bandwidth
    ``bw = 50 + 0.06 f`` Hz.  Coefficients are updated every `block` samples (4 ms); the
    filter state carries over exactly (the last two outputs).
    """
    y = np.asarray(x, dtype=np.float64)
    n, n_res = freqs.shape
    T = 1.0 / SAMPLE_RATE
    starts = np.arange(0, n, block)
    mid = np.minimum(starts + block // 2, n - 1)
    for r in range(n_res):
        f = np.minimum(freqs[mid, r], 0.45 * SAMPLE_RATE)
        bw = 50.0 + 0.06 * f
        C = -np.exp(-2 * np.pi * bw * T)
        B = 2 * np.exp(-np.pi * bw * T) * np.cos(2 * np.pi * f * T)
        A = 1.0 - B - C
        out = np.empty_like(y)
        y1 = y2 = 0.0
        for i, s in enumerate(starts):
            e = min(s + block, n)
            a1, a2 = -B[i], -C[i]
            zi = np.array([-a1 * y1 - a2 * y2, -a2 * y1])
            seg, _ = signal.lfilter([A[i], 0.0, 0.0], [1.0, a1, a2], y[s:e], zi=zi)
            out[s:e] = seg
            y1 = seg[-1]
            y2 = seg[-2] if e - s > 1 else y1
        y = out
    return y


# --------------------------------------------------------------------------- prosody


@dataclass
class _Plan:
    """Per-sample control signals of an utterance."""

    voicing: np.ndarray  # (N,) voicing amplitude
    frication: np.ndarray  # (N,) fricative noise amplitude
    formants: np.ndarray  # (N, 4) vowel targets (reference VTL)
    openness: np.ndarray  # (N,) vowel openness x voicing
    semitones: np.ndarray  # (N,) F0 offset in semitones
    segments: list[tuple[float, float]] = field(default_factory=list)


def _raised_cosine_env(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a > 0:
        env[:a] = 0.5 * (1 - np.cos(np.pi * np.arange(a) / a))
    if r > 0:
        env[n - r :] = 0.5 * (1 + np.cos(np.pi * np.arange(1, r + 1) / r))
    return env


def plan_utterance(voice: VoiceParams, seconds: float, rng: np.random.Generator) -> _Plan:
    """Lay out phrases, pauses and syllables of an utterance of `seconds` seconds."""
    n = int(round(seconds * SAMPLE_RATE))
    sr = SAMPLE_RATE
    voicing = np.zeros(n)
    fric = np.zeros(n)
    openv = np.zeros(n)
    semis = np.zeros(n)
    form = np.tile(np.array(VOWELS["3"][:4]), (n, 1))  # schwa at rest
    names = list(VOWELS)
    segments = []
    t = int(rng.uniform(0.08, 0.35) * sr)
    tail = int(rng.uniform(0.1, 0.3) * sr)
    while t < n - tail - int(0.4 * sr):
        phrase_len = int(rng.uniform(0.7, 2.0) * sr)
        p_end = min(t + phrase_len, n - tail)
        p_start = t
        # Declination over the phrase, scaled by the intonation range.
        p_t = np.linspace(0.0, 1.0, p_end - p_start)
        semis[p_start:p_end] = voice.f0_range_st / 2 * (1.0 - 2.5 * p_t)
        while t < p_end - int(0.08 * sr):
            syl = int(sr / voice.rate_syl_s * rng.uniform(0.7, 1.3))
            syl = min(syl, p_end - t)
            onset = 0
            if rng.random() < 0.55:  # consonant onset: fricative noise or a silent stop gap
                onset = int(syl * rng.uniform(0.2, 0.35))
                if rng.random() < 0.6:
                    fric[t : t + onset] += _raised_cosine_env(onset, onset // 3, onset // 3) * (
                        rng.uniform(0.15, 0.4)
                    )
            v0, v1 = t + onset, t + syl
            if v1 - v0 > 8:
                vowel = VOWELS[names[int(rng.integers(len(names)))]]
                env = _raised_cosine_env(v1 - v0, int(0.025 * sr), int(0.04 * sr))
                level = rng.uniform(0.7, 1.0)
                voicing[v0:v1] = np.maximum(voicing[v0:v1], env * level)
                form[v0:v1] = vowel[:4]
                openv[v0:v1] = env * level * vowel[4]
                if rng.random() < 0.35:  # pitch accent
                    acc = rng.normal(0.0, voice.f0_range_st / 2)
                    c = np.arange(v1 - v0)
                    semis[v0:v1] += acc * np.exp(
                        -0.5 * ((c - (v1 - v0) / 2) / ((v1 - v0) / 3)) ** 2
                    )
            t += syl
        segments.append((p_start / sr, t / sr))
        # Phrase-final fall over the last 150 ms.
        f_len = min(int(0.15 * sr), t - p_start)
        semis[t - f_len : t] -= np.linspace(0, 2.0, f_len)
        t += int(rng.uniform(0.18, 0.6) * sr)
    # Coarticulation: smooth the formant targets (~30 ms) and openness (~40 ms).
    form = _smooth(form, int(0.03 * sr))
    openv = _smooth(openv[:, None], int(0.04 * sr))[:, 0]
    semis = _smooth(semis[:, None], int(0.02 * sr))[:, 0]
    return _Plan(voicing, fric, form, openv, semis, segments)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Moving Hann-window average along axis 0 (edges padded with edge values)."""
    if width < 3:
        return x
    w = np.hanning(width)
    w /= w.sum()
    pad = width // 2
    xp = np.pad(x, ((pad, width - pad - 1), (0, 0)), mode="edge")
    return np.stack(
        [signal.fftconvolve(xp[:, j], w, mode="valid") for j in range(x.shape[1])], axis=1
    )


# --------------------------------------------------------------------------- room


def room_impulse(room: Room, rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise impulse response with a unit direct path, ``(L,)``."""
    length = int(room.rt60_s * SAMPLE_RATE)
    t = np.arange(length) / SAMPLE_RATE
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / room.rt60_s)  # -60 dB at rt60
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # first reflections after 3 ms
    tail *= math.sqrt(10 ** (-room.drr_db / 10) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail


def _coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink-ish noise (1/f power up to 4 kHz), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec /= np.sqrt(np.maximum(f, 50.0))
    spec *= 1.0 / (1.0 + (f / 4000.0) ** 2)
    x = np.fft.irfft(spec, n)
    return x / (np.std(x) + 1e-12)


# --------------------------------------------------------------------------- utterance


def synthesize(
    voice: VoiceParams, seconds: float, room: Room, rng: np.random.Generator
) -> Utterance:
    """Synthesise one utterance of `seconds` seconds of `voice` in `room`.

    Deterministic given the state of `rng`.  The per-utterance F0 offset (speaker's day to
    day variation, log-normal with 3% spread) is drawn first and stored in the result.
    """
    n = int(round(seconds * SAMPLE_RATE))
    if n < SAMPLE_RATE // 4:
        raise ValueError(f"utterance of {seconds} s is too short (minimum 0.25 s)")
    f0_offset = float(math.exp(0.03 * np.clip(rng.standard_normal(), -3, 3)))
    plan = plan_utterance(voice, seconds, rng)
    f0 = voice.f0_hz * f0_offset * 2.0 ** (plan.semitones / 12.0)
    src, _flow = glottal_source(
        f0, voice.open_quotient, voice.jitter, voice.shimmer, voice.breathiness, rng
    )
    scale = VTL_REF_CM / voice.vtl_cm
    freqs = np.empty((n, 5))
    freqs[:, :4] = plan.formants * scale * np.asarray(voice.formant_ratio)
    freqs[:, 4] = F5_REF * scale
    voiced = formant_cascade(src * plan.voicing, freqs)
    voiced /= np.max(np.abs(voiced)) + 1e-12
    # Fricatives: noise band-passed around 2.5-7 kHz (scaled by the tract).
    lo, hi = min(2500 * scale, 5000), min(7000 * scale, 7800)
    b, a = signal.butter(2, [lo / (SAMPLE_RATE / 2), hi / (SAMPLE_RATE / 2)], btype="band")
    fric = signal.lfilter(b, a, rng.standard_normal(n)) * plan.frication
    speech = voiced + 0.5 * fric
    speech = signal.fftconvolve(speech, room_impulse(room, rng))[:n]
    active = plan.voicing > 0.25
    rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else np.std(speech)
    speech += _coloured_noise(n, rng) * rms * 10 ** (-room.snr_db / 20)
    speech *= rng.uniform(0.25, 0.5) / (np.max(np.abs(speech)) + 1e-12)
    # Ground-truth F0 track every 10 ms: the contour where the voicing is on.
    idx = np.minimum(np.arange(0, n, SAMPLE_RATE // F0_RATE), n - 1)
    peak = max(float(plan.voicing.max()), 1e-6)
    f0_track = np.where(plan.voicing[idx] > 0.25 * peak, f0[idx], 0.0)
    return Utterance(
        audio=speech.astype(np.float32),
        segments=np.asarray(plan.segments, dtype=np.float64).reshape(-1, 2),
        f0=f0_track.astype(np.float32),
        voicing=plan.voicing.astype(np.float32),
        openness=np.clip(plan.openness, 0, 1).astype(np.float32),
        f0_offset=f0_offset,
    )


# --------------------------------------------------------------------------- face -> voice


def voice_from_identity(
    z: np.ndarray, gender: str, mapping: VoiceMapping, rng: np.random.Generator
) -> VoiceParams:
    """Voice parameters of an identity from its standardised shape ``z (K,)``, its gender
    (``"m"`` / ``"f"``) and per-identity noise drawn from `rng` (always 12 normal draws,
    whatever the number of linked features: ``e[7]`` is the open quotient's noise and
    ``e[10]`` the breathiness's, linked or not)."""
    gi = {"m": 0, "f": 1}[gender]
    e = np.clip(rng.standard_normal(12), -3, 3)
    proj = np.asarray(mapping.directions) @ np.asarray(z, dtype=np.float64)
    vtl = VTL_MEAN_CM[gi] + mapping.vtl_gain * proj[0] + mapping.vtl_noise * e[0]
    f0 = F0_MEAN_HZ[gi] * math.exp(mapping.f0_gain * proj[1] + mapping.f0_noise * e[1])
    ratios = np.exp(mapping.ratio_gain * proj[2:6] + mapping.ratio_noise * e[2:6])
    if mapping.n_linked == 8:
        oq = OQ_MEAN[gi] + mapping.oq_gain * proj[6] + mapping.oq_noise * e[7]
        log_br = mapping.breath_gain * proj[7] + mapping.breath_noise * e[10]
    else:
        oq = OQ_MEAN[gi] + 0.05 * e[7]
        log_br = 0.3 * e[10]
    return VoiceParams(
        vtl_cm=float(np.clip(vtl, 12.0, 21.0)),
        f0_hz=float(np.clip(f0, 70.0, 320.0)),
        formant_ratio=tuple(float(r) for r in ratios),
        f0_range_st=float(2.5 * math.exp(0.25 * e[6])),
        open_quotient=float(np.clip(oq, 0.4, 0.8)),
        jitter=float(0.008 * math.exp(0.3 * e[8])),
        shimmer=float(0.04 * math.exp(0.3 * e[9])),
        breathiness=float(BREATH_MEAN[gi] * math.exp(log_br)),
        rate_syl_s=float(np.clip(4.2 + 0.5 * e[11], 3.0, 6.0)),
    )
