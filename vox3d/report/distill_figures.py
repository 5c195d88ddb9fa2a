"""The report's figures of the unsupervised variant (:mod:`vox3d.voice.distill`).

* ``unsupervised_faces.png`` (:func:`plot_unsupervised_faces`): per held-out identity, the
  face image the generator makes from its first utterance, the unsupervised mesh, the
  supervised mesh (when trained) and the target (ground truth on the synthetic corpus,
  else the fitted shape); meshes are the mean prediction over the identity's utterances
  from ``evaluate/predictions.h5``, neutral expression, one shared scale.
* ``gan_curves.png`` (:func:`plot_gan_curves`): the training log of the GAN and the
  student (``train/unsupervised_log.csv``), moving averages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vox3d.face.face_model import face_model_from_config  # noqa: E402
from vox3d.report import figures as _fig  # noqa: E402
from vox3d.voice.predictions import Predictions  # noqa: E402


def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    """Trailing moving average of window ``w`` (shorter at the start)."""
    c = np.cumsum(np.insert(np.asarray(y, np.float64), 0, 0.0))
    n = np.arange(1, len(y) + 1)
    lo = np.maximum(0, n - w)
    return (c[n] - c[lo]) / (n - lo)


def plot_gan_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Three panels against the step: the discriminator's and generator's losses; the
    student's distillation losses (parameter MSE, PKT, triplet; log scale); the fractions
    of real / generated images the discriminator gets right and of real / generated
    faces the identity classifier names right."""
    from vox3d.voice.distill import read_log_csv

    d = read_log_csv(log_csv)
    step = d["step"]
    w = max(1, len(step) // 30)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for k, lab in (
        ("loss_d", "discriminator + classifier"),
        ("loss_g", "generator (adversarial + identity)"),
    ):
        ax[0].plot(step, _smooth(d[k], w), label=lab)
    ax[0].set_title("GAN losses", fontsize=9)
    for k, lab in (
        ("loss_param", "parameter MSE"),
        ("loss_pkt", "PKT"),
        ("loss_triplet", "triplet"),
    ):
        y = _smooth(d[k], w)
        if np.any(y > 0):
            ax[1].plot(step, np.maximum(y, 1e-12), label=lab)
    ax[1].set_yscale("log")
    ax[1].set_title("student vs teacher (unweighted)", fontsize=9)
    for k, lab in (
        ("d_real", "D: real called real"), ("d_fake", "D: generated called generated"),
        ("cls_real", "classifier: real faces"), ("cls_fake", "classifier: generated faces"),
    ):  # fmt: skip
        ax[2].plot(step, _smooth(d[k], w), label=lab)
    ax[2].set_ylim(-0.02, 1.02)
    ax[2].set_title("accuracies (training batches)", fontsize=9)
    for a in ax:
        a.set_xlabel("step", fontsize=8)
        a.legend(fontsize=7)
        a.tick_params(labelsize=7)
    fig.suptitle(f"unsupervised variant: moving averages over {w} steps", fontsize=9)
    fig.tight_layout()
    _fig._save(fig, out_png)


def plot_unsupervised_faces(
    model_pt: str | os.PathLike,
    predictions_h5: str | os.PathLike,
    feature_paths: Sequence[str | os.PathLike],
    face_settings: Mapping,
    out_png: str | os.PathLike,
    n: int = 4,
) -> None:
    """The figure of the module docstring for the first `n` held-out identities."""
    import torch

    from vox3d.audio.featurestore import load_utterances
    from vox3d.voice.distill import load_unsupervised, tensor_to_images

    model = load_unsupervised(model_pt)
    pr = Predictions.read(predictions_h5)
    has_gt = pr.has_ground_truth
    tkey = "ground_truth" if has_gt else "fitted"
    unsup, sup = pr.method("unsupervised", tkey), pr.method("model", tkey)
    ids = [i for i in pr.identities if i in unsup and i in pr.targets[tkey]][:n]
    utts = load_utterances(feature_paths, ids)
    fm = face_model_from_config(face_settings, n_id=pr.n_id)
    cols = ["generated face", "unsupervised", *(["supervised"] if sup else []),
            "ground truth" if has_gt else "fitted"]  # fmt: skip
    fig, axes = plt.subplots(
        max(1, len(ids)), len(cols), figsize=(2.1 * len(cols), 2.2 * max(1, len(ids)) + 0.9),
        squeeze=False,
    )  # fmt: skip
    ext = float((fm.mean.max(0) - fm.mean.min(0))[:2].max()) * 1.15
    size = 200

    def mesh(ax, coef):
        v = fm.vertices(np.asarray(coef, np.float32))
        ax.imshow(
            _fig.render_mesh(_fig.frontal_image_coords(v, size, ext), fm.triangles, size=size)
        )

    for r, i in enumerate(ids):
        x = torch.from_numpy(np.asarray(utts[i][0], np.float32))[None]
        axes[r, 0].imshow(tensor_to_images(model.faces(x))[0][..., ::-1])
        mesh(axes[r, 1], np.asarray(unsup[i], np.float64).mean(0))
        c = 2
        if sup:
            mesh(axes[r, c], np.asarray(sup[i], np.float64).mean(0))
            c += 1
        mesh(axes[r, c], pr.targets[tkey][i])
        axes[r, 0].set_ylabel(i, fontsize=8)
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=9)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    acc, chance = model.meta.get("generated_identity_accuracy"), model.meta.get("chance")
    line = (
        f"identity classifier on generated faces (training identities' voices): "
        f"{100 * acc:.1f}% right, chance {100 * chance:.1f}%"
        if acc is not None and chance is not None
        else ""
    )
    fig.text(0.01, 0.005, f"held-out identities; meshes: mean over utterances. {line}", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _fig._save(fig, out_png)
