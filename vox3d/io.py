"""Atomic output and the shared rejects format.

Every file a stage writes goes through :func:`atomic_path`: the data is written to a
temporary name in the same folder and renamed into place only when complete, so a job
killed with SIGKILL leaves either the old file, no file, or the whole new file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

#: Columns of every rejects table (extract, fit, features, ...).
REJECT_COLUMNS = ("path", "stage", "reason")

#: Bytes kept free beyond a write's own estimate (HDF5 metadata and chunk caches flushed at
#: close): :func:`check_free_space` refuses a write that would leave less.
FREE_SPACE_MARGIN = 16 << 20


class DiskFullError(OSError):
    """The device ran out of space while writing a file (``errno`` ENOSPC); the message is
    ``no space left on device while writing <path>`` (``filename`` is that path)."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(path: str | os.PathLike, detail: str = "") -> DiskFullError:
    """A :class:`DiskFullError` naming `path` (the file being written), with `detail`."""
    msg = f"no space left on device while writing {path}" + (f" ({detail})" if detail else "")
    return DiskFullError(errno.ENOSPC, msg, str(path))


def is_no_space(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it was raised from) reports a full device or quota:
    ``errno`` ENOSPC / EDQUOT, or HDF5's driver message that carries the same words."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to this user on the file system holding `path` (an existing file
    or folder; else its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_free_space(path: str | os.PathLike, need_bytes: int) -> None:
    """Raise :class:`DiskFullError` naming `path` unless its file system has `need_bytes`
    plus :data:`FREE_SPACE_MARGIN` bytes free (checked before a large write, so that the
    writer fails cleanly instead of inside a library that cannot recover from ENOSPC)."""
    free = free_bytes(Path(path).parent)
    if free < need_bytes + FREE_SPACE_MARGIN:
        raise disk_full(
            path,
            f"{free / 2**20:.1f} MiB free, about {(need_bytes + FREE_SPACE_MARGIN) / 2**20:.1f} "
            "MiB needed for the next write",
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    On an exception the temporary file is removed and `path` is left untouched; an
    exception that reports a full device (:func:`is_no_space`, from any writer, HDF5
    included) becomes a :class:`DiskFullError` naming `path`.
    `suffix` defaults to the target's suffix (some writers look at it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        if stale.is_file():  # left by a killed earlier writer (Snakemake: one writer per file)
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.",
        suffix=(path.suffix if suffix is None else suffix) + ".part",
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if not isinstance(e, DiskFullError) and is_no_space(e):
            said = (str(e).splitlines() or [""])[0].split(" (")[0]  # HDF5's first clause
            raise disk_full(path, f"{type(e).__name__}: {said}") from e
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_tsv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, object]], columns: Iterable[str]
) -> None:
    """Write rows (dicts) as a tab-separated table with a header, atomically.

    Floats are written with `repr` so values round-trip exactly and bytes are stable.
    """
    columns = list(columns)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([_fmt(row.get(c, "")) for c in columns])


def write_step_log(
    path: str | os.PathLike, rows: Iterable[Mapping[str, object]], columns: Iterable[str]
) -> None:
    """A training log as CSV with a header, atomically: column ``step`` as an integer, the
    others with 6 significant digits (the unsupervised variant's and its encoder's logs)."""
    columns = list(columns)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([int(r[c]) if c == "step" else f"{r[c]:.6g}" for c in columns])


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a tab-separated table with a header into a list of dicts (strings)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v).replace("\t", " ").replace("\n", " ")


def write_rejects(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> None:
    """Write a rejects table (`path`, `stage`, `reason`), sorted by path then stage."""
    rows = sorted(rows, key=lambda r: (str(r["path"]), str(r["stage"])))
    write_tsv(path, rows, REJECT_COLUMNS)


# --------------------------------------------------------------------------------------
# Deterministic HDF5: the same data written gives the same bytes (no object timestamps,
# latest file format).  Every stage creates its HDF5 outputs through these.


def h5_new(path: str | os.PathLike):
    """Create (truncate) an HDF5 file whose bytes depend only on what is written."""
    import h5py

    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)  # the root group
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fid = h5py.h5f.create(os.fsencode(str(path)), h5py.h5f.ACC_TRUNC, fapl=fapl, fcpl=fcpl)
    return h5py.File(fid)


def h5_group(parent, name: str):
    """A sub-group of `parent` without timestamps."""
    import h5py

    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def h5_str(x) -> str:
    """A string read back from HDF5 (variable-length utf-8 comes back as bytes) as str."""
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def h5_read(path: str | os.PathLike, error: type[Exception] = ValueError):
    """An HDF5 file opened read-only; a file that is missing or not HDF5 raises `error`
    naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise error(f"{path}: not a readable HDF5 file ({e})") from e


def h5_attrs(obj) -> dict:
    """The attributes of an HDF5 file, group or dataset as a dict, strings as str."""
    return {k: (h5_str(v) if isinstance(v, bytes | str) else v) for k, v in obj.attrs.items()}


def h5_strings(parent, name: str, values) -> None:
    """A utf-8 string dataset `name` under `parent` (no timestamps)."""
    import h5py
    import numpy as np

    parent.create_dataset(
        name,
        data=np.array(list(values), dtype=object),
        dtype=h5py.string_dtype("utf-8"),
        track_times=False,
    )


# --------------------------------------------------------------------------------------
# Deterministic torch checkpoints.


def _unshared(obj):
    """A copy of the plain-data parts of `obj` in which no str, float or int object is
    shared between places.  The pickler stores a shared object once and refers to it
    after, so two equal states whose objects happen to be shared differently (a run
    resumed from a checkpoint holds loaded, unshared copies) would pickle to different
    bytes; unsharing makes equal content give equal bytes.  Tensors are kept as they are."""
    if isinstance(obj, dict):
        return {_unshared(k): _unshared(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unshared(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_unshared(v) for v in obj)
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if isinstance(obj, float):
        import struct

        return struct.unpack("<d", struct.pack("<d", obj))[0]
    if type(obj) is int:
        return int(str(obj))
    return obj


def save_torch_atomic(path: str | os.PathLike, state) -> None:
    """``torch.save(state)`` to `path` atomically, with bytes that depend only on content:
    serialised in memory (the archive's inner folder name is then fixed, not the temporary
    file's random name) after :func:`_unshared`."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(_unshared(state), buf)
    write_bytes_atomic(path, buf.getvalue())


@contextlib.contextmanager
def main_not_reimported() -> Iterator[None]:
    """Hide ``__main__.__file__`` while spawned worker processes start: a spawned child
    otherwise re-runs the parent's main script (under Snakemake the job's generated copy
    of a ``scripts/`` file, which fails outside the job); the workers need nothing from
    it.  Hold it for the pool's whole life: a spawn pool starts workers on demand."""
    import sys

    main = sys.modules.get("__main__")
    saved = main.__dict__.pop("__file__", None) if main is not None else None
    try:
        yield
    finally:
        if saved is not None:
            main.__file__ = saved
