"""`vox3d voice2mesh` on real speech (wav and video) with a small trained checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vox3d.paths import DATA_ROOT
from vox3d.train import save_checkpoint
from vox3d.voice_model import ModelConfig, VoiceToShape


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    m = VoiceToShape(ModelConfig(n_out=8))
    m.target_std.fill_(0.5)
    p = tmp_path / "model.pt"
    save_checkpoint(
        p, {"model": m.state_dict(), "model_config": m.cfg.to_dict(), "face_model": "ict"}
    )
    return p


@pytest.mark.parametrize(
    "audio",
    [
        DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav",
        DATA_ROOT / "real" / "librispeech",  # a flac (first one found)
    ],
)
def test_voice2mesh_writes_mesh_and_render(tmp_path, checkpoint, audio):
    from vox3d.cli import main

    if audio.is_dir():
        audio = sorted(audio.rglob("*.flac"))[0]
    out, png = tmp_path / "face.obj", tmp_path / "face.png"
    rc = main(
        [
            "voice2mesh",
            str(audio),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--png",
            str(png),
        ]
    )
    assert rc == 0
    lines = out.read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    assert len(v) == 9409 and np.isfinite(v).all()
    assert any(ln.startswith("f ") for ln in lines)
    assert png.stat().st_size > 2000


def test_voice2mesh_video_and_bad_input(tmp_path, checkpoint):
    from vox3d.cli import main

    clip = sorted((DATA_ROOT / "real" / "voxceleb").rglob("*.mp4"))[0]
    assert (
        main(
            [
                "voice2mesh",
                str(clip),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "a.obj"),
            ]
        )
        == 0
    )
    bad = DATA_ROOT / "real" / "bad" / "not_a_video.mp4"
    assert (
        main(
            [
                "voice2mesh",
                str(bad),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "b.obj"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "b.obj").exists()
