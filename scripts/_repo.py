"""Make the `vox3d` package importable from scripts that Snakemake runs.

`make run` installs vox3d into .venv (editable); in a Snakemake conda environment
(`--software-deployment-method conda`) it is not installed, so the repository root is put
on `sys.path` here. Scripts import this module first (Snakemake puts `scripts/` on the path).
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
