"""``OUT/evaluate/predictions.h5``: the evaluation's predictions, its writer and its reader.

Layout (written by :func:`write_predictions` for :func:`vox3d.voice.evaluate.run_evaluate`)::

    by_target/<target>/<method>/<identity>   (N, K) float32  predictions scored against
                                                             <target> (N utterances, or 1)
    by_target/<target>/train_coef_mean|std   (K,)  the target's training statistics
    <method>/<identity>                      hard links to by_target/fitted/<method>/...
    target_<target>/<identity>               (K,) float32  the target's coefficients
    val_identities                           utf-8 strings, sorted
    train_coef_mean, train_coef_std          (K,) float64  the fitted target's statistics
                                             (the model's standardisation)
    attrs: face_model, n_id, alignment (rigid | similarity), vertex_set, target_space
           (mesh | params), note

Targets are ``fitted`` (the identity shapes of ``fit/identities.h5``) and, on the synthetic
corpus, ``ground_truth``; coefficients are identity coefficients in the face model's units.
:class:`Predictions` is the one reader: the report's figures read through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vox3d.io import atomic_path, h5_attrs, h5_read, h5_str


class PredictionsError(ValueError):
    """A file that is not a readable predictions.h5 (the message names it)."""


def write_predictions(
    path: str | os.PathLike,
    preds: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    targets: Mapping[str, Mapping[str, np.ndarray]],
    stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
    val_identities,
    attrs: Mapping[str, object],
) -> None:
    """Write `path` atomically (layout: module docstring).

    preds: ``{target: {method: {identity: (N, K)}}}``; targets: ``{target: {identity:
    (K,)}}``; stats: ``{target: (train mean (K,), train std (K,))}`` (``fitted`` needed);
    attrs: the file attributes (``face_model``, ``n_id``, ``alignment``, ``vertex_set``,
    ``target_space``, ``note``).
    """
    import h5py

    str_dt = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="latest") as f:
        for tname in sorted(targets):
            tg = f.create_group(f"by_target/{tname}")
            for method in sorted(preds[tname]):
                g = tg.create_group(method)
                for ident in sorted(preds[tname][method]):
                    g.create_dataset(
                        ident, data=np.asarray(preds[tname][method][ident], np.float32)
                    )
            tg.create_dataset("train_coef_mean", data=stats[tname][0])
            tg.create_dataset("train_coef_std", data=stats[tname][1])
            if tname == "fitted":
                for method in sorted(preds[tname]):
                    f[method] = tg[method]  # hard links: the same datasets
        for tname in sorted(targets):
            g = f.create_group(f"target_{tname}")
            for ident in sorted(targets[tname]):
                g.create_dataset(ident, data=np.asarray(targets[tname][ident], np.float32))
        ids = np.array(sorted(val_identities), dtype=object)
        f.create_dataset("val_identities", data=ids, dtype=str_dt)
        # the fitted target's training statistics (the model's standardisation); not named
        # train_mean: that is a method group
        f.create_dataset("train_coef_mean", data=np.asarray(stats["fitted"][0], np.float64))
        f.create_dataset("train_coef_std", data=np.asarray(stats["fitted"][1], np.float64))
        for key, value in attrs.items():
            f.attrs[key] = value


@dataclass(frozen=True)
class Predictions:
    """A whole predictions.h5 in memory (it holds a few arrays per held-out identity).

    identities: the validation identities, sorted; targets: ``{target: {identity: (K,)
    float32}}``; by_target: ``{target: {method: {identity: (N, K) float32}}}``;
    train_stats: ``{target: (mean (K,), std (K,))}`` as written; attrs: the file's
    attributes.  Arrays keep their stored dtypes.
    """

    path: Path
    identities: tuple[str, ...]
    targets: dict[str, dict[str, np.ndarray]]
    by_target: dict[str, dict[str, dict[str, np.ndarray]]]
    train_stats: dict[str, tuple[np.ndarray, np.ndarray]]
    attrs: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Predictions:
        import h5py

        p = Path(path)
        with h5_read(p, PredictionsError) as f:
            missing = [k for k in ("val_identities", "by_target", "target_fitted") if k not in f]
            if missing or "n_id" not in f.attrs:
                raise PredictionsError(
                    f"{p}: not an evaluation predictions file (missing {missing or ['n_id']})"
                )

            def arrays(g) -> dict[str, np.ndarray]:
                return {k: v[()] for k, v in g.items() if isinstance(v, h5py.Dataset)}

            targets = {
                name[len("target_") :]: arrays(f[name]) for name in f if name.startswith("target_")
            }
            by_target, stats = {}, {}
            for tname, tg in f["by_target"].items():
                by_target[tname] = {
                    m: arrays(g) for m, g in tg.items() if isinstance(g, h5py.Group)
                }
                stats[tname] = (tg["train_coef_mean"][()], tg["train_coef_std"][()])
            return cls(
                path=p,
                identities=tuple(h5_str(s) for s in f["val_identities"][()]),
                targets=targets,
                by_target=by_target,
                train_stats=stats,
                attrs=h5_attrs(f),
            )

    @property
    def n_id(self) -> int:
        return int(self.attrs["n_id"])

    @property
    def target_space(self) -> str:
        """``mesh`` or ``params`` (older files: ``mesh``)."""
        return str(self.attrs.get("target_space", "mesh"))

    @property
    def face_model(self) -> str:
        return str(self.attrs.get("face_model", ""))

    @property
    def note(self) -> str:
        return str(self.attrs.get("note", ""))

    @property
    def has_ground_truth(self) -> bool:
        return "ground_truth" in self.targets

    @property
    def voice_method(self) -> str:
        """The voice model the figures show: ``model`` (supervised) when evaluated, else
        ``unsupervised`` (``train.mode: unsupervised``)."""
        return (
            "model" if self.method("model") or not self.method("unsupervised") else "unsupervised"
        )

    def method(self, name: str, target: str = "fitted") -> dict[str, np.ndarray]:
        """``{identity: (N, K)}`` of one method scored against `target` (empty if absent)."""
        return self.by_target.get(target, {}).get(name, {})
