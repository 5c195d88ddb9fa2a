"""The README's default-corpus tables, printed from a finished workflow run.

    python bench/default_corpus.py --out-dir results            # print the tables
    python bench/default_corpus.py --out-dir results --check README.md
    python bench/default_corpus.py --out-dir results --write README.md

Reads ``OUT/fit/accuracy.tsv`` (the fit's identity accuracy against the truth),
``OUT/evaluate/metrics.tsv`` and ``OUT/evaluate/comparisons.tsv`` (the voice model and its
baselines, paired bootstrap) of a ``make run`` on the embedded default corpus and prints
three markdown tables; and the corpus's voice -> shape ceiling from
``OUT/synthetic/ground_truth.h5``.  The README holds them between ``<!-- bench:default_corpus
-->`` and ``<!-- /bench:default_corpus -->`` (the ceiling: block ``default_corpus_ceiling``); ``--check`` exits 1 (and shows the difference)
when that block is not what this run prints, ``--write`` replaces the block.  The slow
test ``tests/test_readme_figures.py`` runs the default workflow and ``--check``, so a
table that no longer matches what ``make run`` produces fails CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vox3d import io  # noqa: E402
from vox3d.tools.docblocks import sync_block  # noqa: E402

BLOCK = "default_corpus"

#: fit/accuracy.tsv summary rows shown, and their columns: (column, header, format).
FIT_COLUMNS = (
    ("n_identities", "n", "{:.0f}"),
    ("err_sim_mm", "error, sim. aligned (mm)", "{:.3f}"),
    ("mf_err_sim_mm", "mean face (mm)", "{:.3f}"),
    ("ratio_sim", "ratio", "{:.3f}"),
    ("slope_mean", "slope, modes 0-9", "{:.3f}"),
    ("r2_mean", "R², modes 0-9", "{:.3f}"),
    ("are_mean", "ARE", "{:.4f}"),
    ("mf_are_mean", "ARE, mean face", "{:.4f}"),
)
FIT_GROUPS = ("held_out", "train")

#: metrics.tsv columns shown for every (target, method).
METRIC_COLUMNS = (
    ("are_mean", "ARE", "{:.4f}"),
    ("rmse", "RMSE (cm)", "{:.3f}"),
    ("r2_vertex", "vertex R²", "{:.3f}"),
    ("r2_vertex_sim", "vertex R², sim.", "{:.3f}"),
)
TARGETS = ("ground_truth", "fitted")
METHODS = ("model", "population_mean", "train_mean", "gender_mean", "shuffled_voice")


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header (error naming the file if missing)."""
    if not path.is_file():
        raise SystemExit(f"{path}: missing (run the default workflow first: make run)")
    return io.read_tsv(path)


def _cell(fmt: str, value: str) -> str:
    return fmt.format(float(value)) if value not in ("", "nan", "NaN") else "n/a"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def fit_table(out: Path) -> list[str]:
    """Identity accuracy of the fit (held-out and training identities)."""
    rows = {
        r["identity"]: r for r in read_tsv(out / "fit" / "accuracy.tsv") if r["set"] == "summary"
    }
    body = []
    for g in FIT_GROUPS:
        if g not in rows:
            raise SystemExit(f"{out / 'fit' / 'accuracy.tsv'}: no summary row '{g}'")
        body.append([g.replace("_", "-")] + [_cell(f, rows[g][c]) for c, _, f in FIT_COLUMNS])
    return _table(["identities"] + [h for _, h, _ in FIT_COLUMNS], body)


def metrics_table(out: Path) -> list[str]:
    """Voice model and baselines on the held-out identities, per target."""
    rows = {(r["target"], r["method"]): r for r in read_tsv(out / "evaluate" / "metrics.tsv")}
    body = []
    for t in TARGETS:
        for m in METHODS:
            r = rows.get((t, m))
            if r is None:
                continue
            body.append([t, m] + [_cell(f, r[c]) for c, _, f in METRIC_COLUMNS])
    return _table(["target", "method"] + [h for _, h, _ in METRIC_COLUMNS], body)


def comparisons_table(out: Path) -> list[str]:
    """Paired bootstrap of the model against each baseline (ARE and similarity-aligned R²)."""
    body = []
    for r in read_tsv(out / "evaluate" / "comparisons.tsv"):
        if r["method"] != "model" or r["metric"] not in ("are_mean", "r2_vertex_sim"):
            continue
        f = "{:+.4f}" if r["metric"] == "are_mean" else "{:+.3f}"
        body.append(
            [
                r["target"],
                r["baseline"],
                r["metric"],
                f"{_cell(f, r['delta'])} [{_cell(f, r['delta_lo'])}, {_cell(f, r['delta_hi'])}]",
                _cell("{:.3f}", r["p"]),
            ]
        )
    return _table(["target", "baseline", "metric", "model - baseline [95%]", "p"], body)


def render(out: Path) -> str:
    """The block's text (markdown, newline-terminated)."""
    lines = ["Fit: identity accuracy against the truth (`fit/accuracy.tsv`)", ""]
    lines += fit_table(out)
    lines += ["", "Voice model and baselines, held-out identities (`evaluate/metrics.tsv`)", ""]
    lines += metrics_table(out)
    lines += [
        "",
        "Model minus baseline, paired bootstrap over identities (`evaluate/comparisons.tsv`)",
        "",
    ]
    lines += comparisons_table(out)
    return "\n".join(lines) + "\n"


def render_ceiling(out: Path) -> str:
    """The corpus's voice -> shape ceiling (attribute ``voice_ceiling`` of
    ``OUT/synthetic/ground_truth.h5``, computed by the synthesize job)."""
    from vox3d.synthetic.ground_truth import GroundTruth

    path = out / "synthetic" / "ground_truth.h5"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (run the default workflow first: make run)")
    c = GroundTruth.read(path).ceiling()
    if c is None:
        raise SystemExit(f"{path}: no voice_ceiling attribute")
    return (
        f"Voice -> shape ceiling (best linear predictor, {c['n_samples']:,.0f} simulated "
        f"identities; `synthetic/ground_truth.h5`): R^2 {c['r2_coef']:.3f} on the identity "
        f"coefficients, {c['r2_vertex']:.3f} on face-area vertices, "
        f"{c['r2_vertex_sim']:.3f} on similarity-aligned (scale-free) face-area vertices; "
        f"ARE (CMP pairs) {c['are_mean']:.4f} against the population mean face's "
        f"{c['are_mean_face']:.4f}, {100 * c['are_improvement']:.1f}% better (gender alone: "
        f"R^2 {c['r2_coef_gender']:.3f} / {c['r2_vertex_gender']:.3f} / "
        f"{c['r2_vertex_sim_gender']:.3f}, ARE {100 * c['are_improvement_gender']:.1f}% better).\n"
    )


#: The README's blocks printed by this script: name -> text of a finished run.
BLOCKS = {BLOCK: render, "default_corpus_ceiling": render_ceiling}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out-dir", type=Path, default=Path("results"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--check", type=Path, help="compare with the block in this markdown file")
    g.add_argument("--write", type=Path, help="replace the block in this markdown file")
    a = ap.parse_args(argv)
    rc = 0
    for name, make in BLOCKS.items():
        rc |= sync_block(name, make(a.out_dir), str(a.out_dir), a.check, a.write)
    return rc


if __name__ == "__main__":
    sys.exit(main())
