"""Untrusted files: code-running pickles are refused naming the file; plain data loads."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from vox3d.safeload import BadModelFileError, UnsafeFileError, load_pickle, load_torch


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"mean": _RunsCode()}))
    with pytest.raises(UnsafeFileError) as e:
        load_pickle(p)
    assert str(p) in str(e.value) and "system" in str(e.value)


def test_plain_numpy_dict_pickle_loads(tmp_path):
    p = tmp_path / "ok.pkl"
    data = {"mean": np.arange(62, dtype=np.float32), "std": np.ones(62), "meta": [1, "a", (2.0,)]}
    p.write_bytes(pickle.dumps(data, protocol=4))
    out = load_pickle(p)
    np.testing.assert_array_equal(out["mean"], data["mean"])
    assert out["mean"].dtype == np.float32 and out["meta"] == [1, "a", (2.0,)]


def test_real_param_mean_std(data_root):
    d = load_pickle(data_root / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl")
    assert d["mean"].shape == (62,) and d["std"].shape == (62,)
    assert np.all(np.isfinite(d["mean"])) and np.all(d["std"] > 0)


def test_truncated_pickle_names_file(tmp_path, data_root):
    src = (data_root / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl").read_bytes()
    p = tmp_path / "cut.pkl"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(BadModelFileError, match=str(p)):
        load_pickle(p)


def test_torch_checkpoint_truncated_is_a_clear_error(tmp_path):
    import torch

    good = tmp_path / "w.pt"
    torch.save({"w": torch.arange(10000, dtype=torch.float32)}, good)
    assert torch.equal(load_torch(good)["w"], torch.arange(10000, dtype=torch.float32))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadModelFileError, match=str(cut)):
        load_torch(cut)
    with pytest.raises(BadModelFileError, match="not found"):
        load_torch(tmp_path / "missing.pt")


def test_torch_checkpoint_with_code_is_refused(tmp_path):
    import torch

    p = tmp_path / "evil.pt"
    torch.save({"x": _RunsCode()}, p)
    with pytest.raises(UnsafeFileError, match=str(p)):
        load_torch(p)
