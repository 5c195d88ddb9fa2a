"""Exact torch CPU maths in every process (issue 14): the oneMKL VML first-call race.

``vox3d.torch_setup`` resolves oneMKL's per-function dispatch on one thread as soon as a
process has both vox3d and torch; these tests check that it happens whatever the import
order and in spawned workers, and that a storm of fresh processes making their first
threaded calls (the race's trigger) gives every result exactly.  ``bench/torch_race.py``
runs the same storm without the warm-up to show the race itself where the CPU has it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_ORDERS = {
    "vox3d then torch": "import vox3d, torch",
    "torch then vox3d": "import torch, vox3d",
    "torch via a vox3d module": "import vox3d.face.regressor",
}


def _python(code: str, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k != "VOX3D_NO_TORCH_WARMUP"}
    e.update(env)
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("order", sorted(_ORDERS))
def test_warm_up_runs_in_a_fresh_process(order, outcomes):
    code = f"{_ORDERS[order]}\nfrom vox3d import torch_setup\nprint(torch_setup.warmed)"
    assert _python(code) == "True"
    # and it is really the warm-up that sets the flag: switched off, it stays False
    assert _python(code, VOX3D_NO_TORCH_WARMUP="1") == "False"
    outcomes.append((f"torch_warmup_{order.replace(' ', '_')}", order, "torch", "VML warmed"))


def test_warm_up_runs_in_spawned_workers():
    code = (
        "import multiprocessing as mp\n"
        "def probe(_):\n"
        "    import torch\n"
        "    from vox3d import torch_setup\n"
        "    return torch_setup.warmed\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(2) as p:\n"
        "        print(all(p.map(probe, range(2))))\n"
    )
    script = ROOT / ".cache" / "spawn_probe.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(code)
    try:
        assert _python(f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')") == (
            "True"
        )
    finally:
        script.unlink()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the storm forks (POSIX only)")
def test_storm_of_fresh_processes_gives_exact_results(outcomes):
    """32 fresh processes, 16 at a time on 2 threads each, first threaded call of the ops
    the project uses: every first result equals the repeated call."""
    code = (
        "from vox3d.torch_setup import race_storm\n"
        "ops = ('sqrt', 'exp', 'log', 'sin', 'cos', 'tanh', 'asin', 'log1p')\n"
        "print(*race_storm(32, 16, 2, True, ops))"
    )
    bad_children, bad_calls, calls = map(int, _python(code, VOX3D_NO_TORCH_WARMUP="1").split())
    assert calls == 32 * 8 * 2
    assert (bad_children, bad_calls) == (0, 0)
    outcomes.append(("torch_first_call_storm", "32 fresh processes", "torch", "0 wrong"))
