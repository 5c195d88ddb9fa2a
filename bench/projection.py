"""The VoxCeleb2 build-time projection (``docs/cluster.md``) from the measured throughputs.

    python bench/projection.py [--throughput vox3d/data/throughput.json]
        [--check docs/cluster.md | --write docs/cluster.md]

Prints :func:`vox3d.workflow.projection.projection_markdown` for the default path (the stream stage,
``extract.keep_frames: false``, as the dataset card of a default build) of the throughput file (whose entries
name the bench outputs they come from: ``bench/throughput.py`` for the CPU,
``bench/results/h100_*.txt`` for the GPU).  ``--write`` puts it between the
``<!-- bench:projection -->`` and ``<!-- /bench:projection -->`` lines of a markdown file;
``--check`` exits 1 (and shows the difference) when the file's block differs, which a fast
test in ``tests/test_readme_figures.py`` does for ``docs/cluster.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vox3d.tools.docblocks import sync_block  # noqa: E402
from vox3d.workflow.projection import THROUGHPUT_JSON, projection_markdown  # noqa: E402

BLOCK = "projection"


def render(path: Path) -> str:
    """The block's text (newline-terminated), for the default path (the stream stage)."""
    return projection_markdown(path, stream=True).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--throughput", type=Path, default=THROUGHPUT_JSON)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", type=Path, help="compare with the block in this markdown file")
    g.add_argument("--write", type=Path, help="replace the block in this markdown file")
    a = ap.parse_args(argv)
    return sync_block(BLOCK, render(a.throughput), str(a.throughput), a.check, a.write)


if __name__ == "__main__":
    sys.exit(main())
