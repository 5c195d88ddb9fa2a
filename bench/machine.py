"""What a bench output's header says about the machine it ran on (shared by the benches)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header() -> str:
    """``# <UTC date>, <CPU model>, <N> cores, load <1-min load average>``."""
    now = datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return f"# {now}, {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
