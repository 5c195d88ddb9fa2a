"""One workflow run at a time per ``out_dir``: an exclusive lock on ``OUT/.vox3d.lock``.

Snakemake's own lock lives in the working directory's ``.snakemake/``, so two runs started
from two working directories on one ``out_dir`` do not see each other. This lock lives in
``out_dir`` itself and is an ``fcntl.flock`` on :data:`LOCK_NAME`, taken without waiting:

* the kernel releases it when the holding process ends, however it ends (also SIGKILL or a
  crash), so it never goes stale and needs no ``--unlock``;
* while held, the file says who holds it (``pid``, ``host``, ``started``, ``cwd``) and a
  second run fails at once with :class:`OutDirLocked`, a message naming ``out_dir`` and the
  holder;
* on release the file is emptied first (so two finished runs leave identical files), then
  the descriptor is closed. The file itself is never removed: removing a lock file lets two
  processes lock two different inodes of one name.

The descriptor is opened close-on-exec, so job processes started by the run do not inherit
(and cannot outlive the run holding) the lock. ``flock`` works across processes on one host
and, on Linux, on NFS (as a POSIX lock); two hosts sharing a file system without lock
support are not protected.

The Snakefile takes the lock in ``onstart`` (only real runs of the main process: not ``-n``,
``--lint``, ``--unlock``, ``--report``, nor the per-job ``--mode subprocess/remote``
processes, which run with ``--no-hooks``) and releases it in ``onsuccess`` / ``onerror``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

#: File name of the lock, directly in ``out_dir``.
LOCK_NAME = ".vox3d.lock"
#: Seconds to wait for a holder that has just locked to write who it is.
_INFO_WAIT_S = 1.0

_HELD: dict[str, int] = {}  # absolute out_dir -> descriptor of its locked file


class OutDirLocked(RuntimeError):
    """``out_dir`` is locked by another process; the message names it and the holder."""


def lock_path(out_dir: str | os.PathLike) -> Path:
    """``out_dir/.vox3d.lock``."""
    return Path(out_dir) / LOCK_NAME


def _holder(fd: int) -> dict[str, str]:
    """The ``key=value`` lines the holder wrote (waits up to :data:`_INFO_WAIT_S`)."""
    deadline = time.monotonic() + _INFO_WAIT_S
    while True:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "pid" in info or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


def lock_out_dir(out_dir: str | os.PathLike) -> Path:
    """Take the lock of `out_dir` (created if missing) for this process; return its path.

    Raises :class:`OutDirLocked` at once when another process holds it. Taking it twice in
    one process is a no-op.
    """
    key = os.path.abspath(out_dir)
    path = lock_path(key)
    if key in _HELD:
        return path
    os.makedirs(key, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _holder(fd)
        os.close(fd)
        who = f"process {info.get('pid', '?')} on host {info.get('host', '?')}"
        if info.get("started"):
            who += f", started {info['started']}"
        if info.get("cwd"):
            who += f" in {info['cwd']}"
        raise OutDirLocked(
            f"out_dir {key} is in use by another vox3d run ({who}; lock file {path}). "
            "Wait for that run to end or use another out_dir; the lock goes away by itself "
            "when that process ends, also when it is killed."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    text = (
        f"pid={os.getpid()}\nhost={socket.gethostname()}\n"
        f"started={time.strftime('%Y-%m-%dT%H:%M:%S%z')}\ncwd={os.getcwd()}\n"
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)
    os.fsync(fd)
    _HELD[key] = fd
    return path


def release_out_dir(out_dir: str | os.PathLike) -> None:
    """Release the lock of `out_dir` if this process holds it (empties the file first)."""
    fd = _HELD.pop(os.path.abspath(out_dir), None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the only descriptor drops the flock


def held(out_dir: str | os.PathLike) -> bool:
    """True when this process holds the lock of `out_dir`."""
    return os.path.abspath(out_dir) in _HELD
