"""Mesh export and the `vox3d mesh` command."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from vox3d.face import mesh
from vox3d.paths import ICT_FACEKIT

V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
T = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
C = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]], np.float32)


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_roundtrip_through_trimesh(tmp_path, suffix):
    p = tmp_path / f"m{suffix}"
    mesh.save_mesh(p, V, T, C)
    m = trimesh.load(p, process=False)
    assert np.allclose(m.vertices, V, atol=1e-6)
    assert np.array_equal(m.faces, T)
    rgb = np.asarray(m.visual.vertex_colors)[:, :3]
    assert np.abs(rgb.astype(int) - np.floor(C * 255 + 0.5)).max() <= 1
    # deterministic bytes, atomic write (no temporary left behind)
    b1 = p.read_bytes()
    mesh.save_mesh(p, V, T, C)
    assert p.read_bytes() == b1
    assert [f.name for f in tmp_path.iterdir()] == [p.name]


def test_obj_without_colours_and_errors(tmp_path):
    text = mesh.obj_bytes(V, T).decode()
    assert "v 1.000000 0.000000 0.000000\n" in text and "f 1 3 2\n" in text
    with pytest.raises(ValueError):
        mesh.save_obj(tmp_path / "x.obj", V, T + 10)
    with pytest.raises(ValueError):
        mesh.save_mesh(tmp_path / "x.stl", V, T)
    with pytest.raises(ValueError):
        mesh.save_ply(tmp_path / "x.ply", V, T, C[:2])


@pytest.mark.shared_data(ICT_FACEKIT)
def test_cli_ict_params_to_obj_and_png(tmp_path, capsys):
    from vox3d.face.face_model import load_face_model
    from vox3d.tools.cli import main

    p = np.zeros(62, np.float32)
    p[:12] = [1, 0, 0, 60, 0, 1, 0, 60, 0, 0, 1, 0]
    p[12] = 2.0  # identity mode 0 at +2 std
    p[52] = 1.0  # jawOpen
    np.save(tmp_path / "p.npy", np.stack([np.zeros(62, np.float32), p]))
    out, png = tmp_path / "m.obj", tmp_path / "m.png"
    rc = main(["mesh", "--params", str(tmp_path / "p.npy"), "--index", "1", "--face-model", "ict",
               "--out", str(out), "--png", str(png), "--size", "128"])  # fmt: skip
    assert rc == 0
    m = trimesh.load(out, process=False)
    model = load_face_model("ict", subset="face", n_id=40, n_exp=10)
    e = np.zeros(10, np.float32)
    e[0] = 1
    expect = model.vertices(p[12:52], e)
    assert np.allclose(m.vertices, expect, atol=1e-5) and len(m.faces) == len(model.triangles)
    import cv2

    img = cv2.imread(str(png))
    assert img.shape == (128, 128, 3) and (img.max(-1) > 0).mean() > 0.2
    # wrong length for the layout: a clear error, exit status 1
    np.save(tmp_path / "bad.npy", np.zeros(30, np.float32))
    rc = main(["mesh", "--params", str(tmp_path / "bad.npy"), "--n-id", "40",
               "--out", str(tmp_path / "b.obj")])  # fmt: skip
    assert rc == 1 and not (tmp_path / "b.obj").exists()
    assert "layout needs" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", np.zeros(15, np.float32))  # fewer than 12 + n_exp
    assert (
        main(["mesh", "--params", str(tmp_path / "short.npy"), "--out", str(tmp_path / "c.obj")])
        == 1
    )
