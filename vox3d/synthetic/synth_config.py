"""Constants and configuration of the synthetic corpus (:mod:`vox3d.synthetic.synth`): frame size
and rate, the gender model, face sizes and hard-material probabilities, the seed-sequence
streams and their generator, the deterministic encoder settings, :class:`SynthConfig` and
its presets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vox3d.config import default, preset_setting, setting

#: Frame size (pixels) and rate of every synthetic clip (VoxCeleb2 dev).
FRAME_SIZE = 224
FPS = 25
#: First synthetic identity number (``id90001``): far above VoxCeleb1 (id10001-id11251) and
#: VoxCeleb2 (id00012-id09272).
FIRST_ID = 90001
#: Gender model: ``P(m | z) = sigmoid(GENDER_GAIN * (u_g . z) + GENDER_BIAS)``; the bias
#: gives about 60% men as in VoxCeleb.
GENDER_GAIN = 1.5
GENDER_BIAS = math.log(0.6 / 0.4)
#: Seed of the former mapping's random formant directions (before issue 17; kept so that
#: bench/voice_ceiling.py can rebuild that mapping for comparison).
MAPPING_SEED = 20220601
#: Face size in the frame: image pixels per model centimetre (ICT outer eye corners ~9 cm ->
#: 75-100 px apart, as in VoxCeleb2 crops); small-face videos use SMALL_SCALE.
SCALE_PX_PER_CM = (8.6, 11.0)
SMALL_SCALE_PX_PER_CM = (2.6, 3.6)
#: Probabilities of hard material.
P_SMALL_VIDEO = 0.1
P_PROFILE_UTT = 0.3
P_BLUR_UTT = 0.25
#: Blurred episodes: motion blur of ``blur_px`` pixels plus a defocus (Gaussian) of
#: ``blur_px * DEFOCUS_PER_BLUR_PX`` pixels std (camera shake with focus hunting).
DEFOCUS_PER_BLUR_PX = 0.25
#: Bit flags of the per-frame ``hard`` field.
HARD_PROFILE, HARD_SMALL, HARD_BLUR = 1, 2, 4
#: Seed-sequence streams.
_S_IDENTITY, _S_VIDEO, _S_AUDIO, _S_MOTION, _S_NOISE, _S_NAMES, _S_BACKGROUND = range(1, 8)

#: Deterministic x264 / AAC encoding (VoxCeleb2: H.264 High yuv420p, AAC-LC 16 kHz mono).
FFMPEG_VIDEO_ARGS = (
    "-c:v", "libx264", "-preset", "faster", "-crf", "23", "-pix_fmt", "yuv420p",
    "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
)  # fmt: skip
FFMPEG_AUDIO_ARGS = ("-c:a", "aac", "-b:a", "64k", "-ar", "16000", "-ac", "1")
FFMPEG_BITEXACT_ARGS = (
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
    "-map_metadata", "-1", "-map_chapters", "-1",
)  # fmt: skip


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


#: Named corpus sizes (config ``synthetic.preset``).  ``default``: the embedded corpus of
#: ``make run``: 300 identities x 1 video x 2 utterances of 2 s = 600 clips, 1,200 s of video
#: (74 names A-E held out, 226 training: enough for the voice link to be learnable,
#: bench/results/cpu_voice_link_scale.txt; CPU cost per frame: bench/results/cpu_synth.txt).
#: ``paper``: VoxCeleb1-like for the paper-scale voice model: 1,251 identities (VoxCeleb1's
#: count; names A-E in its proportion, the paper's validation split), 4 videos x 2
#: utterances = 8 utterances each, 4 s: 10,008 clips, 40,032 s of video (about 9,500 CPU s
#: to render at 9.5 ms a frame, bench/results/cpu_synth.txt: ~10 min on 16 cores).
SYNTH_PRESETS: dict[str, dict] = {
    "default": {"identities": 300, "videos_per_identity": 1, "utterances_per_video": 2,
                "seconds": 2.0, "seed": 0},
    "paper": {"identities": 1251, "videos_per_identity": 4, "utterances_per_video": 2,
              "seconds": 4.0, "seed": 0},
}  # fmt: skip


def _preset(key: str):
    """The default preset's value of `key` (config.yaml's ``synthetic.preset``)."""
    return preset_setting(SYNTH_PRESETS, "synthetic.preset", key)


@dataclass(frozen=True)
class SynthConfig:
    """Corpus size and seed (config ``synthetic:``) plus the face model used; defaults: the
    default preset's sizes and config.yaml's face model."""

    identities: int = _preset("identities")
    videos_per_identity: int = _preset("videos_per_identity")
    utterances_per_video: int = _preset("utterances_per_video")
    seconds: float = _preset("seconds")
    seed: int = _preset("seed")
    n_id: int = setting("face_model.n_id")
    n_exp: int = setting("face_model.n_exp")
    metric_subset: str = "face"  # vertex subset for the voice->shape ceiling
    face_model_path: str | None = None

    def __post_init__(self):
        if self.identities < 1 or self.videos_per_identity < 1 or self.utterances_per_video < 1:
            raise ValueError("identities, videos_per_identity, utterances_per_video must be >= 1")
        if self.seconds < 0.5:
            raise ValueError(f"seconds must be >= 0.5 (got {self.seconds})")

    @property
    def n_frames(self) -> int:
        """Frames per utterance clip."""
        return int(round(self.seconds * FPS))

    @classmethod
    def from_settings(cls, settings: Mapping, **model) -> SynthConfig:
        """The config's ``synthetic`` section -> a SynthConfig: the sizes of the named
        ``preset`` (:data:`SYNTH_PRESETS`), then every key that is not null; `model`: the
        face-model fields (``n_id``, ``n_exp``, ``metric_subset``, ``face_model_path``)."""
        s = dict(settings)
        name = s.pop("preset", None) or default("synthetic.preset")
        if name not in SYNTH_PRESETS:
            raise ValueError(f"synthetic.preset {name!r}: choose from {sorted(SYNTH_PRESETS)}")
        d = dict(SYNTH_PRESETS[name])
        d.update({k: v for k, v in s.items() if v is not None and k in cls.__dataclass_fields__})
        d.update(model)
        return cls(**d)
