"""``synthetic/ground_truth.h5``, the synthetic corpus's truth: its format and its reader.

:func:`vox3d.synthetic.synth_card.write_ground_truth` writes it (from the generator's objects; the layout
is in the corpus card); every other module reads the per-identity truth through
:class:`GroundTruth`:

* attributes: ``format`` (:data:`FORMAT`), ``format_version``, ``face_model`` (``ict``),
  ``n_id``, ``voice_params`` (json list of the voice parameters' names), ``voice_mapping``,
  ``gender_model``, ``voice_ceiling`` (json: the corpus card's voice -> shape ceiling) ...;
* ``identities/``: ``id`` (N,) str, ``id_coef`` (N, K) the true identity coefficients
  (face-model units), ``gender`` (N,) ``m`` / ``f``, ``name`` (N,), ``voice`` (N, P) the
  voice parameters (columns: attribute ``voice_params``), ``id_z``, ``set`` ...;
* ``videos/``, ``utterances/``, ``frames/``: per video, utterance and frame truth (pose,
  expression, lighting, camera, voicing), read by the benches that need them.

``identities/id`` and ``identities/id_coef`` are required; a file whose ``format``
attribute names another format, or that lacks them, is a :class:`GroundTruthError` naming
the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.io import h5_attrs, h5_read, h5_str

#: The ``format`` attribute of ground_truth.h5, and its version (bump on layout changes).
FORMAT = "vox3d synthetic ground truth"
FORMAT_VERSION = 1


class GroundTruthError(ValueError):
    """A file that is not a readable synthetic ground truth (the message names it)."""


def _checked_attrs(path: Path, f) -> dict:
    """The open file's attributes; a ``format`` attribute naming another format is a
    :class:`GroundTruthError` naming the file."""
    attrs = h5_attrs(f)
    fmt = attrs.get("format")
    if fmt is not None and fmt != FORMAT:
        raise GroundTruthError(f"{path}: format {fmt!r}, not {FORMAT!r}")
    return attrs


@dataclass(frozen=True)
class GroundTruth:
    """The per-identity part of a ground_truth.h5 (see the module doc).

    ids: identity names; id_coef: ``(N, K)`` float64 true identity coefficients; gender,
    name: per identity (empty strings when the file has none); voice: ``(N, P)`` float64
    voice parameters or None, their names ``voice_names``; attrs: the file's attributes
    (bytes decoded)."""

    path: Path
    ids: tuple[str, ...]
    id_coef: np.ndarray
    gender: tuple[str, ...]
    name: tuple[str, ...]
    voice: np.ndarray | None
    voice_names: tuple[str, ...]
    attrs: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> GroundTruth:
        import h5py

        p = Path(path)
        with h5_read(p, GroundTruthError) as f:
            attrs = _checked_attrs(p, f)
            g = f.get("identities")
            if not isinstance(g, h5py.Group) or "id" not in g or "id_coef" not in g:
                raise GroundTruthError(
                    f"{p}: no identities/id and identities/id_coef (not a synthetic ground "
                    "truth written by vox3d.synthetic.synth)"
                )
            ids = tuple(h5_str(x) for x in g["id"][()])
            coef = np.asarray(g["id_coef"][()], np.float64)
            if coef.ndim != 2 or len(coef) != len(ids):
                raise GroundTruthError(
                    f"{p}: identities/id_coef has shape {coef.shape} for {len(ids)} identities"
                )

            def column(name: str) -> tuple[str, ...]:
                return tuple(h5_str(x) for x in g[name][()]) if name in g else ("",) * len(ids)

            voice = np.asarray(g["voice"][()], np.float64) if "voice" in g else None
            names = json.loads(attrs["voice_params"]) if "voice_params" in attrs else []
            return cls(p, ids, coef, column("gender"), column("name"), voice, tuple(names), attrs)

    @property
    def face_model(self) -> str:
        return str(self.attrs.get("face_model", "ict"))

    def coefficients(self, k: int | None = None) -> dict[str, np.ndarray]:
        """``{identity: (K,) float64}`` true identity coefficients (the first `k`)."""
        return {i: c[:k].copy() for i, c in zip(self.ids, self.id_coef, strict=True)}

    def voices(self) -> dict[str, np.ndarray]:
        """``{identity: (P,) float64}`` voice parameters (GroundTruthError without them)."""
        if self.voice is None:
            raise GroundTruthError(f"{self.path}: no identities/voice")
        return dict(zip(self.ids, self.voice.copy(), strict=True))

    def genders(self) -> dict[str, str]:
        return dict(zip(self.ids, self.gender, strict=True))

    def ceiling(self) -> dict | None:
        """The corpus card's voice -> shape ceiling (attribute ``voice_ceiling``), or None."""
        raw = self.attrs.get("voice_ceiling")
        if raw is None:
            return None
        try:
            return dict(json.loads(raw))
        except (ValueError, TypeError) as e:
            raise GroundTruthError(f"{self.path}: attribute voice_ceiling is not json ({e})") from e


def read_tables(
    path: str | os.PathLike, tables: dict[str, tuple[str, ...]]
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The file's attributes and the per-video / utterance / frame truth the benches use.

    tables: ``{group: (dataset, ...)}``, e.g. ``{"frames": ("pose", "exp"), "utterances":
    ("path",)}``.  Returns ``(attrs, {group: {dataset: array}})`` with string datasets
    decoded to ``(N,) str`` object arrays and numeric ones as stored.  A missing file,
    group or dataset is a :class:`GroundTruthError` naming the file and the dataset.
    """
    p = Path(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    with h5_read(p, GroundTruthError) as f:
        attrs = _checked_attrs(p, f)
        for group, names in tables.items():
            out[group] = {}
            for name in names:
                key = f"{group}/{name}"
                if key not in f:
                    raise GroundTruthError(f"{p}: no dataset {key}")
                a = f[key][()]
                if a.dtype.kind in "OS":
                    a = np.array([h5_str(x) for x in a], dtype=object)
                out[group][name] = a
    return attrs, out
