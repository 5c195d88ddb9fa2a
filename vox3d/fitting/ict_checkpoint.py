"""The ICT regressor's checkpoint files: the ``.pth`` (a plain state_dict) and its ``.json``.

The json sidecar holds the layout, the whitening mean/std, the generator and training
settings and the held-out accuracy (written by :func:`vox3d.fitting.ict_train.save_checkpoint`,
the identity calibration added by ``python -m vox3d.fitting.regressor_data calibrate``).  Here:
its reader (:func:`read_checkpoint_meta`), the trained model (:func:`load_model`) and the
fit stage's :class:`vox3d.face.regressor.Regressor` of it (:func:`make_regressor`, the one piece
:mod:`vox3d.fitting.fit` imports).  Light: torch comes with :mod:`vox3d.face.regressor` when a model is
loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.config import default
from vox3d.safeload import BadModelFileError

DATA_DIR = paths.PACKAGE_DATA
DEFAULT_CHECKPOINT = DATA_DIR / "ict_regressor.pth"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The json sidecar of a checkpoint (``X.pth`` -> ``X.json``), with clear errors."""
    jp = Path(path).with_suffix(".json")
    if not jp.is_file():
        raise BadModelFileError(
            f"{jp}: missing: the ICT regressor needs its json (layout, parameter mean/std); "
            "retrain with `snakemake train_regressor` or restore vox3d/data/ict_regressor.json"
        )
    try:
        return json.loads(jp.read_text())
    except json.JSONDecodeError as e:
        raise BadModelFileError(f"{jp}: not valid json ({e})") from e


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """MobileNet with the checkpoint's weights (eval mode) and its (mean, std)."""
    from vox3d.face.regressor import load_mobilenet

    meta = read_checkpoint_meta(path)
    model = load_mobilenet(path, float(meta["widen"]), int(meta["num_params"])).to(device)
    mean = np.asarray(meta["param_mean"], np.float32)
    std = np.asarray(meta["param_std"], np.float32)
    return model.eval(), mean, std, meta


def make_regressor(
    path: str | os.PathLike,
    n_id: int,
    n_exp: int,
    device: str = "cpu",
    precision: str = default("fit.precision"),
):
    """A :class:`vox3d.face.regressor.Regressor` for the ICT checkpoint `path` (+ its json).

    Checks that the checkpoint predicts the configured ``ict_layout(n_id, n_exp)``; the
    whitening mean/std come from the json (handed to the Regressor as the plain
    ``{"mean", "std"}`` pickle it reads, in a temporary folder).
    """
    import pickle
    import tempfile

    from vox3d.face.regressor import Regressor

    meta = read_checkpoint_meta(path)
    if (int(meta["n_id"]), int(meta["n_exp"])) != (int(n_id), int(n_exp)):
        raise BadModelFileError(
            f"{path}: this ICT regressor predicts n_id={meta['n_id']}, n_exp={meta['n_exp']} "
            f"but the config asks for n_id={n_id}, n_exp={n_exp}: set face_model.n_id/n_exp "
            "to match or train one with `snakemake train_regressor`"
        )
    mean = np.asarray(meta["param_mean"], np.float32)
    std = np.asarray(meta["param_std"], np.float32)
    with tempfile.TemporaryDirectory() as td:
        ms = Path(td) / "param_mean_std.pkl"
        with open(ms, "wb") as fh:
            pickle.dump({"mean": mean, "std": std}, fh, protocol=4)
        return Regressor(
            path,
            ms,
            widen=float(meta["widen"]),
            num_params=int(meta["num_params"]),
            device=device,
            precision=precision,
        )
