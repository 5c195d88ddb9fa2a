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

Face -> voice mapping (:class:`VoiceMapping`, documented in the corpus card): with
``z = id_coef / id_std`` (the identity in prior standard units, ``z ~ N(0, I)``),

``vtl_cm          = VTL_MEAN[g] + VTL_GAIN * (a_vtl . z) + VTL_NOISE * e1``
``log f0_hz       = log F0_MEAN[g] + F0_GAIN * (a_f0 . z) + F0_NOISE * e2``
``log ratio_i     = RATIO_GAIN * (b_i . z) + RATIO_NOISE * e_i``          (i = 1..4)
``open_quotient   = OQ_MEAN[g] + OQ_GAIN * (a_oq . z) + OQ_NOISE * e8``
``log breathiness = log BREATH_MEAN[g] + BREATH_GAIN * (a_br . z) + BREATH_NOISE * e11``

with unit direction vectors (rows of :attr:`VoiceMapping.directions`), gender ``g`` and
per-identity noise ``e ~ N(0, 1)`` (12 draws per identity, clipped to +-3).  The source-
filter story behind each link (the directions are built by :func:`vox3d.synth_rig.
mapping_directions`; the correlations below are within a gender, of the feature with its
direction's projection, ``gain / sqrt(gain^2 + noise^2)``, and of the direction with the
named face proportion it is signed by, :func:`vox3d.synth_rig.proportion_correlations`):

* vocal-tract length (formant dispersion: all formants scale with ``1 / VTL``) follows face
  length (nasion - chin), the size link: r = 0.92 (0.8 cm per unit, 0.35 cm noise);
* F0 (larynx size) falls along a heavier lower face: ``a_f0`` is the face-proportion mode
  most tied to jaw width / face width (-0.53) and lower-face height / face length (-0.50);
  r = 0.82 (0.10 log Hz per unit, 0.07 noise);
* the formant ratios (the tract's departure from a uniform tube: oral and pharyngeal
  cavity proportions) follow face-proportion modes: ``b_1`` the breadth of the cheeks and
  head relative to the eye spacing (CMP's cheek / ear ratios, 0.94 / 0.87), ``b_2``
  forehead width and nose projection against mid-face width, ``b_3`` forehead width and
  lower-face height, ``b_4`` forehead and mouth width; r = 0.91 each (0.045 log ratio per
  unit, 0.02 noise: formants move by about 5%);
* the glottal source: open quotient and breathiness (spectral tilt, aspiration noise)
  follow the next two proportion modes (face width / upper-face height, +0.41 and -0.36);
  r = 0.91 each (0.045 and 0.27 log per unit; their total spread, 0.05 and 0.3 log, is as
  without the link).

The remaining voice parameters (intonation range, jitter, shimmer, speaking rate) depend on
gender and noise only.  The proportion modes are scale free (the leading eigenvectors of
the similarity-removed face-area shape plus CMP's face ratios, orthogonal to ``a_vtl``), so
most of the voice's information survives an image fit, which cannot see size.  A mapping
with 6 direction rows (the form before issue 17) links the first six features only.  These
strengths are a design choice of the synthetic world, far stronger than voice-face
correlations measured in real people; the resulting ceiling: :func:`voice_ceiling` and
``bench/results/cpu_voice_ceiling.txt``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import signal

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

#: Gender-specific means (index 0 = "m", 1 = "f").
VTL_MEAN_CM = (17.0, 14.8)
F0_MEAN_HZ = (118.0, 205.0)
#: Gender-specific means of the glottal parameters (open quotient; breathiness, log-normal).
OQ_MEAN = (0.55, 0.65)
BREATH_MEAN = (0.2, 0.35)

#: Names of the face-linked voice features (rows of :attr:`VoiceMapping.directions`), in
#: order; a mapping with 6 rows links the first six only.
LINKED_FEATURES = (
    "vtl_cm",
    "log_f0_hz",
    "log_formant_ratio_1",
    "log_formant_ratio_2",
    "log_formant_ratio_3",
    "log_formant_ratio_4",
    "open_quotient",
    "log_breathiness",
)


@dataclass(frozen=True)
class VoiceMapping:
    """Linear map from standardised identity coefficients ``z (K,)`` to voice parameters.

    directions: ``(L, K)`` unit rows, ``L`` = 8 (``a_vtl, a_f0, b_1..b_4, a_oq, a_br``: the
    features of :data:`LINKED_FEATURES`) or 6 (the first six; open quotient and
    breathiness then depend on gender and noise only); gains and noise levels as in the
    module docstring.  The default gains / noises are the corpus's: each feature correlates
    with its direction's projection ``d . z`` by ``gain / sqrt(gain^2 + noise^2)`` within a
    gender (0.92, 0.82, 0.91 x 4, 0.91, 0.91).  See :func:`voice_from_identity`.
    """

    directions: np.ndarray
    vtl_gain: float = 0.8  # cm per unit of a_vtl . z
    vtl_noise: float = 0.35  # cm
    f0_gain: float = 0.10  # log Hz per unit
    f0_noise: float = 0.07  # log Hz
    ratio_gain: float = 0.045  # log ratio per unit
    ratio_noise: float = 0.02  # log ratio
    oq_gain: float = 0.045  # open quotient per unit (total spread 0.05 as without the link)
    oq_noise: float = 0.02
    breath_gain: float = 0.27  # log breathiness per unit (total spread 0.3 as without it)
    breath_noise: float = 0.12
    direction_names: tuple[str, ...] = (
        "a_vtl", "a_f0", "b_1", "b_2", "b_3", "b_4", "a_oq", "a_br",
    )  # fmt: skip

    @property
    def n_linked(self) -> int:
        """Number of face-linked features (rows of `directions`: 6 or 8)."""
        n = int(np.asarray(self.directions).shape[0])
        if n not in (6, 8):
            raise ValueError(f"VoiceMapping needs 6 or 8 direction rows, got {n}")
        return n

    def linear_part(self) -> dict[str, object]:
        """The mapping as plain values (JSON-able) for the corpus card and HDF5 attributes."""
        d = {k: v for k, v in asdict(self).items() if k != "directions"}
        d["direction_names"] = list(self.direction_names[: self.n_linked])
        d["features"] = list(LINKED_FEATURES[: self.n_linked])
        d["directions"] = np.asarray(self.directions).round(6).tolist()
        d["vtl_mean_cm"] = list(VTL_MEAN_CM)
        d["f0_mean_hz"] = list(F0_MEAN_HZ)
        d["oq_mean"] = list(OQ_MEAN)
        d["breath_mean"] = list(BREATH_MEAN)
        return d

    def gains(self) -> np.ndarray:
        """``(L,)`` gains of the linear (log) voice features (:data:`LINKED_FEATURES`)."""
        g = [self.vtl_gain, self.f0_gain] + [self.ratio_gain] * 4
        g += [self.oq_gain, self.breath_gain]
        return np.asarray(g[: self.n_linked], dtype=np.float64)

    def noises(self) -> np.ndarray:
        """``(L,)`` per-identity noise std of the linear (log) voice features."""
        s = [self.vtl_noise, self.f0_noise] + [self.ratio_noise] * 4
        s += [self.oq_noise, self.breath_noise]
        return np.asarray(s[: self.n_linked], dtype=np.float64)

    def gender_means(self) -> np.ndarray:
        """``(2, L)`` the features' means for men (row 0) and women (row 1)."""
        m = [
            [VTL_MEAN_CM[g], math.log(F0_MEAN_HZ[g]), 0.0, 0.0, 0.0, 0.0, OQ_MEAN[g],
             math.log(BREATH_MEAN[g])]
            for g in (0, 1)
        ]  # fmt: skip
        return np.asarray(m, dtype=np.float64)[:, : self.n_linked]


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


def similarity_gram(mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Gram ``(K, K)`` of the identity basis after removing similarity, to first order.

    mean: ``(V, 3)`` the mean face over the evaluated vertices; basis: ``(K, V, 3)``.  Each
    basis displacement field loses its least-squares projection on the 7 infinitesimal
    similarity motions of the mean face (3 translations, 3 rotations about the centroid, 1
    uniform scale about it), so ``e^T G_sim e`` is the squared vertex error of a shape
    difference ``e`` after the best similarity alignment (Umeyama with scale) of the
    mean face plus ``e`` onto the mean face, to first order in ``e``: the scale-free part.
    """
    m = np.asarray(mean, dtype=np.float64)
    b = np.asarray(basis, dtype=np.float64)
    k, v = b.shape[0], m.shape[0]
    c = m - m.mean(0)
    motions = []
    for a in range(3):
        t = np.zeros((v, 3))
        t[:, a] = 1.0
        motions.append(t.ravel())
    for a in range(3):
        axis = np.zeros(3)
        axis[a] = 1.0
        motions.append(np.cross(axis, c).ravel())
    motions.append(c.ravel())
    q, _ = np.linalg.qr(np.array(motions).T)
    bf = b.reshape(k, -1)
    bp = bf - (bf @ q) @ q.T
    return bp @ bp.T


def voice_ceiling(
    mapping: VoiceMapping,
    gram: np.ndarray,
    id_std: np.ndarray,
    gender_logit: tuple[np.ndarray, float, float],
    n_samples: int = 200_000,
    seed: int = 12345,
    gram_sim: np.ndarray | None = None,
    are: tuple[np.ndarray, np.ndarray, dict] | None = None,
) -> dict[str, float]:
    """Fraction of identity-shape variance predictable from the voice parameters.

    Monte Carlo over the generative model: ``z ~ N(0, I)``, gender from
    ``gender_logit = (u (K,), gain, bias)`` (``P(m) = sigmoid(gain * u.z + bias)``), the
    face-linked voice features from :func:`voice_from_identity`'s linear part (no clipping).
    The best linear predictor of ``c = z * id_std`` from ``[features, gender, 1]`` is fitted
    by least squares on the sample; reported on a second, independent sample:

    * ``r2_coef``: ``1 - E|c - c_hat|^2 / E|c - mean c|^2`` (identity coefficients),
    * ``r2_vertex``: the same in vertex space, ``|B e|^2 = e^T G e`` with ``gram = G =
      B^T B`` of the identity basis over the evaluated vertices,
    * ``r2_vertex_gender``: vertex-space R^2 of the gender-mean baseline (gender only);
    * with ``gram_sim`` (:func:`similarity_gram`): ``r2_vertex_sim`` and
      ``r2_vertex_sim_gender``, the same with ``G_sim`` (scale-normalised: similarity
      removed to first order);
    * with ``are = (mean_pts (P, 3), basis_pts (K, P, 3), pairs)`` (the mean face and the
      identity basis at the ARE vertices, `pairs` the ARE pairs indexing those P points):
      ``are_mean`` (the predicted faces' ARE against the true faces,
      :func:`vox3d.metrics.face_ratios`, mean over ratios and identities),
      ``are_mean_face`` (the population mean face's), ``are_gender`` (the gender-mean
      baseline's), ``are_improvement`` = ``1 - are_mean / are_mean_face`` and
      ``are_improvement_gender``.
    """
    rng = np.random.default_rng(seed)
    K = mapping.directions.shape[1]

    def sample(n):
        return simulate_voices(mapping, id_std, gender_logit, n, rng)

    def fit(X, c, Xt, ct):
        W, *_ = np.linalg.lstsq(X, c, rcond=None)
        return Xt @ W

    def r2(e, d, g):
        return float(1 - np.einsum("ij,jk,ik->", e, g, e) / np.einsum("ij,jk,ik->", d, g, d))

    X, c = sample(n_samples)
    Xt, ct = sample(n_samples)
    g_cols = [X.shape[1] - 2, X.shape[1] - 1]
    pred = fit(X, c, Xt, ct)
    pred_g = fit(X[:, g_cols], c, Xt[:, g_cols], ct)
    d = ct - ct.mean(0)
    eye = np.eye(K)
    out = {
        "r2_coef": r2(ct - pred, d, eye),
        "r2_vertex": r2(ct - pred, d, gram),
        "r2_coef_gender": r2(ct - pred_g, d, eye),
        "r2_vertex_gender": r2(ct - pred_g, d, gram),
        "n_samples": float(n_samples),
    }
    if gram_sim is not None:
        out["r2_vertex_sim"] = r2(ct - pred, d, gram_sim)
        out["r2_vertex_sim_gender"] = r2(ct - pred_g, d, gram_sim)
    if are is not None:
        errs = are_errors_of(are, ct, {"voice": pred, "gender": pred_g, "mean": 0 * ct})
        out["are_mean"], out["are_gender"], out["are_mean_face"] = (
            errs["voice"], errs["gender"], errs["mean"],
        )  # fmt: skip
        out["are_improvement"] = 1.0 - errs["voice"] / errs["mean"]
        out["are_improvement_gender"] = 1.0 - errs["gender"] / errs["mean"]
    return out


def simulate_voices(
    mapping: VoiceMapping,
    id_std: np.ndarray,
    gender_logit: tuple[np.ndarray, float, float],
    n: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` identities of the generative model (:func:`voice_ceiling`'s sample): ``X (n, L +
    2)`` = the linked voice features (:data:`LINKED_FEATURES`, with their gender means and
    noise), the male indicator and 1; ``c (n, K)`` = ``z * id_std``."""
    u, g_gain, g_bias = gender_logit
    K = mapping.directions.shape[1]
    std = np.asarray(id_std, dtype=np.float64)[:K]
    means = mapping.gender_means()
    z = rng.standard_normal((n, K))
    p_m = 1.0 / (1.0 + np.exp(-(g_gain * (z @ u) + g_bias)))
    male = rng.random(n) < p_m
    feats = (z @ mapping.directions.T) * mapping.gains()
    feats += rng.standard_normal(feats.shape) * mapping.noises()
    feats += np.where(male[:, None], means[0], means[1])
    X = np.column_stack([feats, male.astype(np.float64), np.ones(n)])
    return X, z * std


def are_errors_of(
    are: tuple[np.ndarray, np.ndarray, dict],
    true_coef: np.ndarray,
    predictions: dict[str, np.ndarray],
    chunk: int = 50_000,
) -> dict[str, float]:
    """Mean ARE (:func:`vox3d.metrics.face_ratios`; per identity the mean of the
    available ratios' ``|pred - true|``, then the mean over identities, as
    :func:`vox3d.metrics.identity_errors` with one prediction) of each of
    ``predictions {name: (N, K) coefficients}`` against ``true_coef (N, K)``.

    ``are = (mean_pts (P, 3), basis_pts (K, P, 3), pairs)``: the mean face and the identity
    basis at the P ARE vertices, `pairs` indexing those points.
    """
    from vox3d.metrics import face_ratios

    mean_pts, basis_pts, pairs = are
    mp = np.asarray(mean_pts, dtype=np.float64)
    bp = np.asarray(basis_pts, dtype=np.float64)
    n = len(true_coef)
    sums = dict.fromkeys(predictions, 0.0)
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        rt = face_ratios(mp + np.einsum("nk,kpd->npd", true_coef[sl], bp), pairs)
        for name, p in predictions.items():
            rp = face_ratios(mp + np.einsum("nk,kpd->npd", p[sl], bp), pairs)
            sums[name] += float(np.nanmean(np.abs(rp - rt), axis=1).sum())
    return {name: v / n for name, v in sums.items()}
