"""Every loader of untrusted content goes through vox3d.safeload (issue 10, item 5).

The test scans the project's own Python sources and Snakemake files for the unsafe
calls; only vox3d/safeload.py may touch pickle / torch.load, and it must pass
weights_only=True.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p
    for pattern in (
        "vox3d/**/*.py",
        "scripts/**/*.py",
        "bench/**/*.py",
        "Sim3DR/**/*.py",
        "rules/*.smk",
        "Snakefile",
    )
    for p in ROOT.glob(pattern)
)
ALLOWED = {ROOT / "vox3d" / "safeload.py"}

PATTERNS = {
    "pickle.load": re.compile(r"\bpickle\.loads?\s*\("),
    "torch.load": re.compile(r"\btorch\.load\s*\("),
    "eval(": re.compile(r"(?<![\w.])eval\s*\("),
    "exec(": re.compile(r"(?<![\w.])exec\s*\("),
    "shell=True": re.compile(r"shell\s*=\s*True"),
    "yaml.load": re.compile(r"\byaml\.load\s*\((?![^)]*SafeLoader)"),
    "np.load(allow_pickle=True)": re.compile(r"allow_pickle\s*=\s*True"),
}


def _code_lines(path: Path):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.split("#", 1)[0]
        if stripped.strip():
            yield n, stripped


def test_sources_found():
    assert len(SOURCES) > 5, "the scan found no sources: the glob patterns are wrong"


def test_no_unsafe_loaders_outside_safeload():
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {name}"
        for p in SOURCES
        if p not in ALLOWED
        for n, line in _code_lines(p)
        for name, rx in PATTERNS.items()
        if rx.search(line)
    ]
    assert not hits, "unsafe loading outside vox3d/safeload.py:\n" + "\n".join(hits)


def test_safeload_torch_load_uses_weights_only():
    text = (ROOT / "vox3d" / "safeload.py").read_text(encoding="utf-8")
    calls = re.findall(r"torch\.load\(([^)]*)\)", text)
    assert calls, "vox3d/safeload.py no longer calls torch.load"
    assert all("weights_only=True" in c for c in calls)


def test_scanner_catches_a_planted_call(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("import pickle\nx = pickle.load(open('f', 'rb'))\n")
    assert any(PATTERNS["pickle.load"].search(line) for _, line in _code_lines(planted))
