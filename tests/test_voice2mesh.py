"""`vox3d voice2mesh` on real speech (wav and video) with a small trained checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vox3d.paths import DATA_ROOT
from vox3d.voice.train_checkpoints import save_checkpoint
from vox3d.voice.voice_model import ModelConfig, VoiceToShape


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


def _voice2mesh(audio, *args) -> int:
    """`vox3d voice2mesh AUDIO ARGS...` in process (paths as strings)."""
    from vox3d.tools.cli import main

    return main(["voice2mesh", str(audio), *(str(a) for a in args)])


@pytest.mark.parametrize(
    "audio",
    [
        DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav",
        DATA_ROOT / "real" / "librispeech",  # a flac (first one found)
    ],
)
def test_voice2mesh_writes_mesh_and_render(tmp_path, checkpoint, audio):
    if audio.is_dir():
        audio = sorted(audio.rglob("*.flac"))[0]
    out, png = tmp_path / "face.obj", tmp_path / "face.png"
    rc = _voice2mesh(audio, "--checkpoint", checkpoint, "--out", out, "--png", png)
    assert rc == 0
    lines = out.read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:4]] for ln in lines if ln.startswith("v ")])
    assert len(v) == 9409 and np.isfinite(v).all()
    assert any(ln.startswith("f ") for ln in lines)
    assert png.stat().st_size > 2000


def test_voice2mesh_video_and_bad_input(tmp_path, checkpoint):
    from vox3d.tools.cli import main

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


def test_voice2mesh_defaults_to_the_workflow_model(tmp_path, checkpoint, capsys):
    # no --checkpoint: <out_dir>/train/model.pt, out_dir from config.yaml (project root)
    import yaml

    from vox3d.config import DEFAULT_CONFIG
    from vox3d.paths import REPO_ROOT
    from vox3d.tools.cli import main
    from vox3d.tools.voice2mesh import default_checkpoint

    configured = yaml.safe_load(DEFAULT_CONFIG.read_text())["out_dir"]
    assert default_checkpoint() == REPO_ROOT / configured / "train" / "model.pt"
    out_dir = tmp_path / "run"
    (out_dir / "train").mkdir(parents=True)
    (out_dir / "train" / "model.pt").write_bytes(checkpoint.read_bytes())
    wav = DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav"
    mesh = tmp_path / "face.obj"
    rc = main(["voice2mesh", str(wav), "--out-dir", str(out_dir), "--out", str(mesh)])
    printed = capsys.readouterr().out
    assert rc == 0 and mesh.stat().st_size > 0
    assert f"mesh written to {mesh.resolve()}" in printed
    assert str(out_dir / "train" / "model.pt") in printed


@pytest.mark.parametrize("how", ["--out-dir", "--checkpoint"])
def test_voice2mesh_missing_model_names_the_path(tmp_path, capsys, how):
    from vox3d.tools.cli import main

    wav = DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav"
    given = tmp_path / "empty"
    expected = given / "train" / "model.pt" if how == "--out-dir" else given
    rc = main(["voice2mesh", str(wav), how, str(given), "--out", str(tmp_path / "f.obj")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"no trained model at {expected}" in err
    assert not (tmp_path / "f.obj").exists()


def test_voice2mesh_serves_the_unsupervised_variant(tmp_path, checkpoint):
    """The unsupervised model file (vox3d.voice.distill) is recognised by its format, gives a
    mesh and the generated face image; a supervised one refuses --face-png."""
    from PIL import Image

    from vox3d.face.regressor import build_mobilenet
    from vox3d.voice import distill
    from vox3d.voice.voice_model import VoiceEncoder

    torch.manual_seed(1)
    cfg = distill.DistillConfig()
    gen = distill.Generator(64, cfg.generator_channels)
    trunk = distill.FaceTrunk(3, cfg.trunk_channels)
    student = build_mobilenet(0.5, 62)
    meta = {
        "config": cfg.to_dict(), "n_bands": 64, "encoder_channels": [256, 384, 576, 864],
        "widen": 0.5, "num_params": 62, "n_pose": 12,
        "n_id": 40, "n_exp": 10, "param_mean": [0.0] * 62, "param_std": [0.1] * 62,
        "calibration": None, "face_model": "ict", "identities": ["a", "b", "c"],
    }  # fmt: skip
    p = tmp_path / "unsupervised.pt"
    distill.save_unsupervised(
        p, VoiceEncoder().state_dict(),
        {"generator": gen.state_dict(), "student": student.state_dict(), "trunk": trunk.state_dict()},
        meta,
    )  # fmt: skip
    audio = DATA_ROOT / "cmp" / "reference_fbank" / "id06811_00216.wav"
    out, face = tmp_path / "u.obj", tmp_path / "face.png"
    rc = _voice2mesh(audio, "--checkpoint", p, "--out", out, "--face-png", face)
    assert rc == 0
    v = [ln for ln in out.read_text().splitlines() if ln.startswith("v ")]
    assert len(v) == 9409
    img = np.asarray(Image.open(face))
    assert img.shape == (256, 256, 3) and img.std() > 0
    # the default location with --unsupervised: OUT/train/unsupervised.pt
    (tmp_path / "train").mkdir()
    p.rename(tmp_path / "train" / "unsupervised.pt")
    assert _voice2mesh(audio, "--out-dir", tmp_path, "--unsupervised", "--out", out) == 0
    # a supervised model generates no face
    assert _voice2mesh(audio, "--checkpoint", checkpoint, "--out", out, "--face-png", face) == 1
