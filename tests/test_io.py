"""Atomic writes: complete file or nothing; rejects tables."""

from __future__ import annotations

import pytest

from vox3d.io import atomic_path, read_tsv, write_rejects, write_text_atomic, write_tsv


def test_atomic_path_success(tmp_path):
    target = tmp_path / "sub" / "out.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["out.h5"]


def test_atomic_path_exception_leaves_nothing(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_exception_keeps_old_file(tmp_path):
    target = tmp_path / "out.tsv"
    write_text_atomic(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("new but partial")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


def test_tsv_roundtrip_and_rejects(tmp_path):
    rows = [{"a": 0.1, "b": "x\ty"}, {"a": None, "b": "ü z"}]
    write_tsv(tmp_path / "t.tsv", rows, ["a", "b"])
    assert read_tsv(tmp_path / "t.tsv") == [{"a": "0.1", "b": "x y"}, {"a": "", "b": "ü z"}]
    write_rejects(
        tmp_path / "r.tsv",
        [
            {"path": "b", "stage": "extract", "reason": "r2"},
            {"path": "a", "stage": "extract", "reason": "r1"},
        ],
    )
    assert [r["path"] for r in read_tsv(tmp_path / "r.tsv")] == ["a", "b"]
    assert (tmp_path / "r.tsv").read_text().splitlines()[0] == "path\tstage\treason"


def test_save_torch_atomic_bytes_depend_only_on_content(tmp_path):
    import torch

    from vox3d.io import save_torch_atomic
    from vox3d.safeload import load_torch

    names = ["id00001", "id00002"]
    shared = {"ids": names, "val": names, "w": torch.arange(4.0), "loss": [0.5, 0.25]}
    unshared = {"ids": list(names), "val": [n.encode().decode() for n in names],
                "w": torch.arange(4.0), "loss": [0.5, 0.25]}  # fmt: skip
    save_torch_atomic(tmp_path / "a.pt", shared)
    save_torch_atomic(tmp_path / "sub" / "b.pt", unshared)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()
    back = load_torch(tmp_path / "a.pt")
    assert back["ids"] == names and torch.equal(back["w"], torch.arange(4.0))
    assert not list(tmp_path.glob(".*part"))
