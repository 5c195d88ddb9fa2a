"""``vox3d.torch_setup.resolve_device``: the one reading of a ``device`` setting, used by
fit (a name), train, evaluate and voice2mesh (wrapped in ``torch.device``)."""

from __future__ import annotations

import pytest
import torch

from vox3d.fitting import fit
from vox3d.tools import voice2mesh
from vox3d.torch_setup import resolve_device
from vox3d.voice import evaluate, train


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_follows_what_torch_sees(monkeypatch, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device("auto") == ("cuda" if gpu else "cpu")
    assert resolve_device("cpu") == "cpu"
    if gpu:
        assert resolve_device("cuda") == "cuda"


def test_cuda_without_a_gpu_names_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"^train\.device is 'cuda' but torch sees no CUDA"):
        resolve_device("cuda", "train.device")


def test_every_stage_uses_the_one_function():
    import inspect

    assert fit.resolve_device is resolve_device and train.resolve_device is resolve_device
    for mod in (evaluate, voice2mesh):
        assert "from vox3d.torch_setup import resolve_device" in inspect.getsource(mod)
    for mod in (fit, train, evaluate, voice2mesh):
        assert "def resolve_device" not in inspect.getsource(mod)
