"""README figures come from bench scripts, and stay true (issue 15, item 6).

Every figure of a claim that cites a recorded bench output (``bench/results/NAME``) is in
that output (vox3d.tools.docfigures), and every row of the README's benchmark tables cites one.
Every generated block (``<!-- bench:NAME -->``) in the README and docs names a script that
prints it.  The slow test runs the default workflow exactly as ``make run`` does (only
``out_dir`` moved) and checks the README's default-corpus tables against what
``bench/default_corpus.py`` prints from that run, so a stale table fails CI.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from tiny_workflow import ROOT, run_snakemake

from vox3d.tools import docblocks, docfigures

#: Block name -> the bench script that prints it.
GENERATORS = {
    "default_corpus": ROOT / "bench" / "default_corpus.py",
    "default_corpus_ceiling": ROOT / "bench" / "default_corpus.py",
    "projection": ROOT / "bench" / "projection.py",
}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "bench" / "results"


def _bench_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_generated_block_has_a_script():
    seen = {name for doc in DOCS for name in docblocks.block_names(doc)}
    assert "default_corpus" in seen  # the README's default-corpus tables are generated
    for name in seen:
        assert name in GENERATORS, f"block {name} has no generator script"
        assert GENERATORS[name].is_file()
        for doc in DOCS:
            if name in docblocks.block_names(doc):
                docblocks.read_block(doc, name)  # well-formed: one opening, one closing line


def test_block_round_trip_and_errors(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("a\n<!-- bench:t -->\nold\n<!-- /bench:t -->\nb\n")
    assert docblocks.read_block(doc, "t") == "old\n"
    docblocks.replace_block(doc, "t", "new 1\nnew 2")
    assert doc.read_text() == "a\n<!-- bench:t -->\nnew 1\nnew 2\n<!-- /bench:t -->\nb\n"
    with pytest.raises(ValueError, match="x.md.*exactly one"):
        docblocks.read_block(doc, "missing")
    doc.write_text("<!-- bench:t -->\nno end\n")
    with pytest.raises(ValueError, match="no closing line"):
        docblocks.read_block(doc, "t")


def test_cluster_projection_matches_the_throughput_file(tmp_path):
    """docs/cluster.md's VoxCeleb2 projection is what bench/projection.py prints from
    vox3d/data/throughput.json; a changed measurement makes the committed block stale."""
    script = GENERATORS["projection"]
    doc = ROOT / "docs" / "cluster.md"
    ok = subprocess.run([sys.executable, str(script), "--check", str(doc)], capture_output=True)
    assert ok.returncode == 0, ok.stdout.decode()[-3000:]
    data = json.loads((ROOT / "vox3d" / "data" / "throughput.json").read_text())
    data["measurements"]["fit_gpu"]["value"] = 1000.0  # a 45x slower GPU fit
    changed = tmp_path / "throughput.json"
    changed.write_text(json.dumps(data))
    stale = subprocess.run(
        [sys.executable, str(script), "--throughput", str(changed), "--check", str(doc)],
        capture_output=True,
        text=True,
    )
    assert stale.returncode == 1 and "stale" in stale.stdout


def _fake_run(out: Path, ratio: str) -> None:
    """A minimal workflow output with the three files the script reads."""
    (out / "fit").mkdir(parents=True)
    (out / "evaluate").mkdir(parents=True)
    cols = [c for c, _, _ in _bench_module(GENERATORS["default_corpus"]).FIT_COLUMNS]
    rows = ["identity\tset\t" + "\t".join(cols)]
    for g in ("held_out", "train"):
        vals = {c: "0.5" for c in cols} | {"n_identities": "10", "ratio_sim": ratio}
        rows.append(f"{g}\tsummary\t" + "\t".join(vals[c] for c in cols))
    (out / "fit" / "accuracy.tsv").write_text("\n".join(rows) + "\n")
    (out / "evaluate" / "metrics.tsv").write_text(
        "method\ttarget\tare_mean\trmse\tr2_vertex\tr2_vertex_sim\n"
        "model\tground_truth\t0.02\t0.5\t0.1\t0.2\n"
        "population_mean\tground_truth\t0.03\t0.6\t0.0\t0.0\n"
    )
    (out / "evaluate" / "comparisons.tsv").write_text(
        "target\tmethod\tbaseline\tmetric\tdelta\tdelta_lo\tdelta_hi\tp\n"
        "ground_truth\tmodel\tpopulation_mean\tare_mean\t-0.01\t-0.02\t-0.001\t0.004\n"
    )
    (out / "synthetic").mkdir()
    ceiling = {"n_samples": 1000.0, "r2_coef": 0.1, "r2_coef_gender": 0.01, "r2_vertex": 0.5,
               "r2_vertex_gender": float(ratio), "r2_vertex_sim": 0.4, "r2_vertex_sim_gender": 0.02,
               "are_mean": 0.02, "are_mean_face": 0.04, "are_improvement": 0.5,
               "are_improvement_gender": 0.01}  # fmt: skip
    with h5py.File(out / "synthetic" / "ground_truth.h5", "w") as f:  # the minimal layout
        f.attrs["voice_ceiling"] = json.dumps(ceiling)
        f.create_dataset("identities/id", data=np.array(["id0"], dtype=object),
                         dtype=h5py.string_dtype())  # fmt: skip
        f.create_dataset("identities/id_coef", data=np.zeros((1, 40)))


def test_check_fails_on_a_stale_table(tmp_path):
    script = GENERATORS["default_corpus"]
    doc = tmp_path / "README.md"
    doc.write_text(
        "# t\n<!-- bench:default_corpus -->\n<!-- /bench:default_corpus -->\n"
        "<!-- bench:default_corpus_ceiling -->\n<!-- /bench:default_corpus_ceiling -->\n"
    )

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)

    _fake_run(tmp_path / "a", "0.440")
    _fake_run(tmp_path / "b", "0.980")  # a run whose fit reads no identity
    assert run("--out-dir", str(tmp_path / "a"), "--check", str(doc)).returncode == 1  # empty
    assert run("--out-dir", str(tmp_path / "a"), "--write", str(doc)).returncode == 0
    body = docblocks.read_block(doc, "default_corpus")
    assert "| held-out | 10 | 0.500 | 0.500 | 0.440 |" in body
    assert (
        "| ground_truth | population_mean | are_mean | -0.0100 [-0.0200, -0.0010] | 0.004 |" in body
    )
    ceiling = docblocks.read_block(doc, "default_corpus_ceiling")
    assert "R^2 0.100 on the identity coefficients, 0.500 on face-area vertices" in ceiling
    assert "gender alone: R^2 0.010 / 0.440 / 0.020" in ceiling and "1,000 simulated" in ceiling
    assert run("--out-dir", str(tmp_path / "a"), "--check", str(doc)).returncode == 0
    stale = run("--out-dir", str(tmp_path / "b"), "--check", str(doc))
    assert stale.returncode == 1 and "0.980" in stale.stdout and "stale" in stale.stdout
    assert "block default_corpus_ceiling is stale" in stale.stdout


@pytest.mark.slow
def test_readme_default_corpus_tables_match_a_fresh_default_run(tmp_path):
    out = tmp_path / "out"
    cfg = tmp_path / "out_dir.yaml"
    cfg.write_text(yaml.safe_dump({"out_dir": str(out)}))
    targets = [str(out / "fit" / "accuracy.tsv"), str(out / "evaluate" / "comparisons.tsv")]
    run = run_snakemake(
        [*targets, "--cores", "2", "--configfile", str(ROOT / "config.yaml"), str(cfg)],
        tmp_path,
        timeout=1500,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    check = subprocess.run(
        [
            sys.executable,
            str(GENERATORS["default_corpus"]),
            "--out-dir",
            str(out),
            "--check",
            str(ROOT / "README.md"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]


def test_cited_figures_are_in_the_recorded_outputs():
    """Every figure of a README / docs claim that cites ``bench/results/NAME`` is in that
    file (vox3d.tools.docfigures): rerunning a bench and committing its output makes the claims
    that still quote the old value fail here."""
    problems = [m for doc in DOCS for m in docfigures.stale_figures(doc, RESULTS)]
    assert not problems, "\n".join(problems)


def test_every_benchmark_row_cites_its_output():
    """The README's benchmark tables: each row names the recorded output it quotes."""
    rows, in_table = [], False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| benchmark"):
            in_table = True
        elif in_table and line.startswith("|") and not line.startswith("|---"):
            rows.append(line)
        elif not line.startswith("|"):
            in_table = False
    assert len(rows) >= 15
    for row in rows:
        assert docfigures.CITE_RE.search(row), f"no bench/results/ file cited: {row[:90]}"


def test_figure_check_catches_a_stale_figure(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "a.txt").write_text("$ bench/a.py\nrate: 52218.4 crops/s, error 1.07e-06, 0.63965\n")
    doc = tmp_path / "doc.md"

    def check(text):
        doc.write_text(text)
        return docfigures.stale_figures(doc, res)

    ok = "Speed 52,218 crops/s, error 1.1e-6, ratio 0.640 (`bench/results/a.txt`, `n=1000`).\n"
    assert check(ok) == []
    assert check("Speed 52,218 crops/s (3,000 in `x`).\n") == []  # cites nothing: not checked
    stale = check(ok.replace("0.640", "0.650"))
    assert len(stale) == 1 and "0.650" in stale[0] and "a.txt" in stale[0]
    assert check(ok.replace("52,218", "52,219"))  # one crop/s off at the written precision
    assert check(ok.replace("1.1e-6", "2.1e-6"))
    assert check(ok.replace("a.txt", "b.txt")) == [
        "doc.md:1: cites bench/results/b.txt, which is missing"
    ]
    table = "Caption (`bench/results/a.txt`):\n\n| x | y |\n|---|---|\n| rate | 52,218 |\n"
    assert check(table) == []
    assert check(table.replace("| 52,218 |", "| 48,084 |")) == [
        "doc.md:5: 48,084 is in none of a.txt"
    ]
    block = "<!-- bench:t -->\n9.99 `bench/results/a.txt`\n<!-- /bench:t -->\n"
    assert check(block) == []  # generated blocks are checked against their scripts instead


def test_every_recorded_output_is_described():
    """bench/results/README.md names every recorded output (what ran it, on which machine)."""
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    for f in sorted(RESULTS.iterdir()):
        if f.name != "README.md":
            assert f"`{f.name}`" in index, f"{f.name} is not described in bench/results/README.md"
