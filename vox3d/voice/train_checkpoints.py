"""The files of a training run besides its model: checkpoints
``checkpoints/step-NNNNNNN.pt`` (plain dicts, loadable with ``weights_only=True``, written
atomically; :func:`latest_checkpoint` finds the one a rerun resumes from), the step log
``log.csv`` (:data:`LOG_COLUMNS`) and TensorBoard's ``tb/`` (:func:`_summary_writer`).
:func:`save_checkpoint` also writes the model file ``model.pt`` (:func:`vox3d.voice.train.train`).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path

from vox3d.io import save_torch_atomic, write_text_atomic
from vox3d.safeload import BadModelFileError, load_torch

_CKPT_RE = re.compile(r"^step-(\d{7})\.pt$")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint dict atomically (torch.save to a temporary name, then rename)."""
    save_torch_atomic(path, state)


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(ckpt_dir: Path, key: str, log: Callable[[str], None] = print) -> dict | None:
    """Newest readable checkpoint with a matching run key, else None."""
    for _step, p in reversed(list_checkpoints(ckpt_dir)):
        try:
            state = load_torch(p)
        except BadModelFileError as e:
            log(f"skipping unreadable checkpoint: {e}")
            continue
        if state.get("run_key") != key:
            log(f"ignoring checkpoint {p.name}: made with another config or data")
            continue
        return state
    return None


LOG_COLUMNS = (
    "step",
    "loss",
    "loss_param",
    "loss_vertex",
    "loss_ratio",
    "val_loss",
    "val_loss_param",
    "val_loss_vertex",
    "val_loss_ratio",
    "lr",
)


def _write_log_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, delimiter=",", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in LOG_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _summary_writer(log_dir: Path, purge_step: int | None):
    """A TensorBoard SummaryWriter, or a no-op stand-in where tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard not installed: no TensorBoard logs (log.csv only)", file=sys.stderr)

        class _NoTB:
            def add_scalar(self, *a, **k):
                pass

            def flush(self):
                pass

            def close(self):
                pass

        return _NoTB()
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
