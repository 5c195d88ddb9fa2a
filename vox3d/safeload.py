"""The one safe path for loading untrusted model files.

* :func:`load_pickle` unpickles with a restricted unpickler that admits only numpy arrays,
  numpy scalars/dtypes and plain containers; anything else (a pickle that tries to run
  code) raises :class:`UnsafeFileError` naming the file.
* :func:`load_torch` calls ``torch.load(..., weights_only=True)`` and turns every failure
  into :class:`UnsafeFileError` / :class:`BadModelFileError` naming the file.

No other module calls ``pickle.load`` or ``torch.load``; a test greps for that.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any


class BadModelFileError(ValueError):
    """A model/asset file could not be read (missing, truncated, wrong layout)."""


class UnsafeFileError(BadModelFileError):
    """A file asked to construct something other than plain data."""


# (module, name) pairs a pickle may reference.  numpy moved its internals between 1.x and
# 2.x (numpy.core -> numpy._core); both spellings are admitted.
_ALLOWED: set[tuple[str, str]] = {
    ("builtins", n)
    for n in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "bool",
        "slice",
    )
} | {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, source: str) -> None:
        super().__init__(fh, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeFileError(
            f"{self._source}: refused to load: the pickle asks for {module}.{name}, "
            "but only numpy arrays and plain containers are allowed"
        )


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle of numpy arrays / plain containers from `path`, safely.

    Raises :class:`UnsafeFileError` if the pickle references any other callable and
    :class:`BadModelFileError` if the file is missing, truncated or not a pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, str(path)).load()
    except BadModelFileError:
        raise
    except FileNotFoundError as e:
        raise BadModelFileError(f"{path}: file not found") from e
    except Exception as e:  # truncated, garbage, wrong protocol ...
        raise BadModelFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def load_torch(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadModelFileError(f"{path}: checkpoint not found")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (PK..); the legacy format starts with a pickle opcode
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise BadModelFileError(
            f"{path}: could not read checkpoint (not a PyTorch file: it is neither a zip "
            f"archive nor a legacy torch pickle; starts with {head!r})"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{path}: refused to load: not a plain weights file ({_torch_refusal(e)})"
        ) from e
    except Exception as e:
        raise BadModelFileError(
            f"{path}: could not read checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


def _torch_refusal(e: Exception) -> str:
    """The line of torch's weights_only refusal that names what was asked for, without the
    terminal colour codes torch puts in it."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
    return (named or lines or [type(e).__name__])[0]


def check_state_dict(
    state: dict, expected: dict[str, tuple[int, ...]], source: str, allow_extra: bool = False
) -> None:
    """Check a state dict's keys and tensor shapes against `expected`; raise naming `source`."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        raise BadModelFileError(
            f"{source}: missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    if extra and not allow_extra:
        raise BadModelFileError(
            f"{source}: unexpected weights {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    for k, shape in expected.items():
        got = tuple(state[k].shape)
        if got != tuple(shape):
            raise BadModelFileError(
                f"{source}: weight {k} has shape {got}, expected {tuple(shape)}"
            )
