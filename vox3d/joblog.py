"""One way for every Snakemake script to log: :func:`job_log`.

A job's log file (``OUT/logs/<rule>/...``) receives everything the job says: ``print``
(stdout), warnings and progress bars (stderr), :mod:`logging` records, the full traceback
of an exception that ends the job, and, should the process die of a fatal signal (SIGSEGV
in a C library, for instance), the Python stack that :mod:`faulthandler` dumps.  The
exception is re-raised, so the script still fails and Snakemake prints the traceback on
the console too; the process's own streams and logging set-up are restored on the way
out whatever happens.

Usage in ``scripts/<stage>.py``::

    with job_log(snakemake.log[0]) as log:
        ...  # the job; print(..., file=log) also works
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

#: Format of the :mod:`logging` records written into a job log.
LOG_FORMAT = "%(levelname)s %(message)s"


@contextlib.contextmanager
def job_log(path: str | os.PathLike, level: int = logging.INFO) -> Iterator[TextIO]:
    """Send the job's stdout, stderr and root :mod:`logging` (at `level`) into `path`.

    The file is (re)created, UTF-8 and line buffered.  An exception raised inside the block
    has its full traceback written into the file and then propagates unchanged (a
    ``SystemExit`` with status 0 or ``None`` is not a failure and is not written).
    ``sys.stdout``, ``sys.stderr``, the root logger's handlers and level, and the state of
    :mod:`faulthandler` are those of before the block afterwards.

    Yields the open log file (text).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in finally
    old_out, old_err = sys.stdout, sys.stderr
    root = logging.getLogger()
    old_level = root.level
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    fault_was_enabled = faulthandler.is_enabled()
    try:
        root.addHandler(handler)
        root.setLevel(level)
        sys.stdout = sys.stderr = fh
        faulthandler.enable(file=fh, all_threads=True)
        yield fh
    except SystemExit as e:
        if e.code not in (0, None):
            _write_traceback(fh)
        raise
    except BaseException:
        _write_traceback(fh)
        raise
    finally:
        faulthandler.disable()
        sys.stdout, sys.stderr = old_out, old_err
        if fault_was_enabled:
            with contextlib.suppress(ValueError, OSError, AttributeError, RuntimeError):
                faulthandler.enable(file=sys.stderr, all_threads=True)
        root.removeHandler(handler)
        root.setLevel(old_level)
        with contextlib.suppress(OSError, ValueError):
            fh.flush()
        with contextlib.suppress(OSError, ValueError):
            fh.close()


def _write_traceback(fh: TextIO) -> None:
    """The exception being handled, as Python prints it, at the end of the log file."""
    with contextlib.suppress(OSError, ValueError):
        fh.write("job failed:\n")
        traceback.print_exc(file=fh)
        fh.flush()
