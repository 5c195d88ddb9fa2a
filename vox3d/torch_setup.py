"""Process-level torch set-up: the oneMKL vector-math warm-up that keeps CPU results exact,
and :func:`resolve_device`, the one reading of a ``device`` setting (``auto | cpu | cuda``)
(:func:`job_gpus`: the GPUs a workflow job asks for from the same setting).

Why: torch's CPU build routes contiguous float unary ops (``sqrt``, ``exp``, ``log``,
``sin``, ``asin``, ``tanh``, ...) to the oneMKL vector-math library (VML) it bundles
(2024.2 in the pinned torch 2.13 wheel).  oneMKL picks each VML function's kernel lazily,
on that function's first call in the process; when that first call runs on several
intra-op threads at once (a fresh process's first sizable op, typically under CPU load),
one thread can run a low-accuracy kernel over its whole chunk for that one call (pytorch
issue 188792; fixed in oneMKL >= 2025.0).  In training that is the first ``Adam.step()``
(``sqrt`` of the second moments): one OpenMP thread's half of a weight tensor moves by a
12-bit-accurate amount, and the run no longer gives the same bytes.

The fix, applied in every process that imports both vox3d and torch: call every
VML-routed op once on a one-element tensor of each floating dtype before any threaded
call, so the dispatch is resolved on one thread.  :func:`install` (run by
``import vox3d``) does it at once when torch is already imported, else right after torch's
import finishes (a ``sys.meta_path`` hook on the top-level ``torch`` module alone); worker
processes import vox3d to unpickle their targets, so data-loader workers are covered too.
Cost: about 1 ms per process.  ``VOX3D_NO_TORCH_WARMUP=1`` turns it off (for
``bench/torch_race.py``, which measures the race with and without it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import shutil
import sys
from types import ModuleType

#: Unary ops that ATen sends to oneMKL VML for float32/float64 (``aten/src/ATen/cpu/vml.h``),
#: plus their close relatives; warming an op that does not use VML is harmless (1 element).
VML_OPS: tuple[str, ...] = (
    "abs",
    "acos",
    "asin",
    "atan",
    "ceil",
    "cos",
    "cosh",
    "erf",
    "erfc",
    "erfinv",
    "exp",
    "exp2",
    "expm1",
    "floor",
    "lgamma",
    "log",
    "log10",
    "log1p",
    "log2",
    "neg",
    "reciprocal",
    "round",
    "rsqrt",
    "sigmoid",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
)

#: Environment variable that disables the warm-up (benchmarks of the race only).
DISABLE_ENV = "VOX3D_NO_TORCH_WARMUP"

#: True once :func:`warm_up` ran in this process.
warmed = False


def warm_up(torch: ModuleType | None = None) -> bool:
    """Resolve oneMKL's VML dispatch on this thread: each op of :data:`VML_OPS` once on a
    one-element float32 and float64 tensor.  Idempotent; returns True when it ran (now or
    before), False when disabled by ``VOX3D_NO_TORCH_WARMUP``."""
    global warmed
    if warmed:
        return True
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    if torch is None:
        import torch
    _call_each_op_once(torch)
    warmed = True
    return True


def _call_each_op_once(torch: ModuleType) -> None:
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_OPS:
            getattr(torch, name)(x)


class _WarmAfterTorchImport(importlib.abc.MetaPathFinder):
    """Finds ``torch`` through the normal finders and wraps its loader so that
    :func:`warm_up` runs as soon as the module has executed."""

    def find_spec(self, fullname, path, target=None):  # noqa: D401 (importlib protocol)
        if fullname != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _remove_hook()
            warm_up(module)

        loader.exec_module = exec_module  # this loader instance serves this spec only
        return spec


_HOOK = _WarmAfterTorchImport()


def _remove_hook() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def install() -> None:
    """Warm up now if torch is imported, else once it is (see the module docstring)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "sqrt"):
        warm_up(torch)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def resolve_device(device: str, setting: str = "device") -> str:
    """The torch device name a ``device`` setting asks for: ``auto`` -> ``cuda`` when torch
    sees a GPU, else ``cpu``; any other name is returned as given, but ``cuda`` without a
    GPU is an error naming `setting` (e.g. ``"fit.device"``).  Callers that want a
    ``torch.device`` wrap the name: ``torch.device(resolve_device(...))``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting} is 'cuda' but torch sees no CUDA device; use auto or cpu")
    return device


#: Stages whose ``device: auto`` asks the scheduler for a GPU when the host that builds the
#: DAG has one (``nvidia-smi`` on PATH).  The fit is where a GPU pays (docs/cluster.md); the
#: other stages' ``auto`` requests none and uses a GPU only when the job happens to see one
#: (:func:`resolve_device`), which keeps their jobs on CPU nodes (train's runtime request,
#: ``vox3d.workflow.jobsize.train_it_s``, assumes the CPU unless its device is ``cuda``).
AUTO_GPU_STAGES: frozenset[str] = frozenset({"fit"})


def job_gpus(stage: str, device: str) -> int:
    """GPUs a workflow job of `stage` (``fit``, ``train``, ``evaluate``, ``regressor``)
    requests (Snakemake resource ``gpu``) for its ``device`` setting: 1 for ``cuda``; 1 for
    ``auto`` in a stage of :data:`AUTO_GPU_STAGES` when ``nvidia-smi`` is on PATH; else 0.
    Light (no torch): the Snakefile calls it while building the DAG."""
    if device == "cuda":
        return 1
    if device == "auto" and stage in AUTO_GPU_STAGES and shutil.which("nvidia-smi"):
        return 1
    return 0


def race_storm(
    processes: int, wave: int, threads: int, warm: bool, ops: tuple[str, ...] = VML_OPS
) -> tuple[int, int, int]:
    """Reproduce (``warm=False``) or rule out (``warm=True``) the VML first-call race.

    Forks ``processes`` children, ``wave`` at a time (so they compete for the cores);
    each is a process whose VML dispatch is still unresolved (the caller must not have
    run a VML op nor started torch's thread pool: run this in a fresh process with
    ``VOX3D_NO_TORCH_WARMUP=1``), sets ``threads`` intra-op threads, optionally warms up,
    then applies each op of ``ops`` to 49,152 float32 and float64 values twice and counts
    the ops whose first result differs from the second (the second call always runs the
    resolved kernel).  Returns ``(children with a wrong first call, wrong first calls,
    first calls made)``.  POSIX only (``os.fork``).
    """
    import torch

    def child() -> int:
        torch.set_num_threads(threads)
        if warm:
            _call_each_op_once(torch)
        bad = 0
        for dtype in (torch.float32, torch.float64):
            x = torch.linspace(0.05, 0.95, 49152, dtype=dtype)
            for name in ops:
                f = getattr(torch, name)
                bad += int(not torch.equal(f(x), f(x)))
        return bad

    bad_children = bad_calls = 0
    for start in range(0, processes, wave):
        pids = []
        for _ in range(min(wave, processes - start)):
            pid = os.fork()
            if pid == 0:  # the child: report through the exit status, never return
                code = 0
                try:
                    code = min(child(), 100)
                except BaseException:
                    code = 101
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code == 101 or code < 0:
                raise RuntimeError(f"race_storm child {pid} failed (exit {code})")
            bad_calls += code
            bad_children += code > 0
    return bad_children, bad_calls, processes * len(ops) * 2
