"""`vox3d compare-runs`: finds every differing file, ignores logs and timings."""

from __future__ import annotations

from vox3d.tools.compare import cli, compare_runs


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def test_identical_trees_and_ignored_files(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(
        a,
        {"fit/s.h5": b"x" * 10, "logs/fit/s.log": b"12:00", "train/tb/events.out.tfevents.1": b"1"},
    )
    _tree(
        b,
        {"fit/s.h5": b"x" * 10, "logs/fit/s.log": b"12:07", "train/tb/events.out.tfevents.2": b"2"},
    )
    assert compare_runs(a, b) == []
    assert cli([str(a), str(b)]) == 0


def test_reports_changed_and_missing_files(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, {"fit/s.h5": b"abc", "extract/s.h5": b"same", "only_a.tsv": b"1"})
    _tree(b, {"fit/s.h5": b"abd", "extract/s.h5": b"same", "only_b.tsv": b"1"})
    diffs = dict(compare_runs(a, b))
    assert diffs["fit/s.h5"] == "bytes differ"
    assert "only_a.tsv" in diffs and "only_b.tsv" in diffs
    assert "extract/s.h5" not in diffs
    assert cli([str(a), str(b)]) == 1
    assert "fit/s.h5\tbytes differ" in capsys.readouterr().out
