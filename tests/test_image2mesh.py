"""`vox3d image2mesh`: json parameters (no BFM file needed), meshes and overlays."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from vox3d import paths
from vox3d.face.regressor import build_mobilenet
from vox3d.safeload import load_pickle
from vox3d.tools.cli import main as vox3d_main
from vox3d.tools.image2mesh import cli

IMG = paths.TDDFA_DIR / "examples" / "trump_hillary.jpg"


def test_json_bfm_without_bfm_file(tmp_path, ref):
    out = tmp_path / "faces.json"
    assert vox3d_main(["image2mesh", str(IMG), "--face-model", "bfm", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    faces = doc["faces"]
    assert len(faces) == 2
    box = np.array([f["box"] for f in faces])
    roi = np.array([f["roi_box"] for f in faces])
    par = np.array([f["params"] for f in faces])
    assert par.shape == (2, 62)
    assert np.abs(box - ref["trump_hillary/boxes"]).max() < 1e-2
    assert np.abs(roi - ref["trump_hillary/roi_boxes"]).max() < 1e-2
    std = load_pickle(paths.PARAM_MEAN_STD)["std"]
    assert (np.abs(par - ref["trump_hillary/params"]) / std).max() < 1e-4


def test_missing_assets_give_clear_errors(tmp_path, capsys):
    rc = cli([str(IMG), "--face-model", "bfm", "--out", str(tmp_path / "m.obj")])
    err = capsys.readouterr().err
    assert rc == 1 and "bfm_noneck_v3.pkl" in err and "3DDFA_V2" in err
    assert not (tmp_path / "m.obj").exists()
    rc = cli(
        [
            str(IMG),
            "--face-model",
            "bfm",
            "--bfm",
            str(tmp_path / "nope.pkl"),
            "--png",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 1 and "nope.pkl" in capsys.readouterr().err
    rc = cli(
        [
            str(IMG),
            "--face-model",
            "ict",
            "--ict-regressor",
            str(tmp_path / "ict.pth"),
            "--json",
            str(tmp_path / "j.json"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "ict.pth" in err and "train_regressor" in err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    rc = cli([str(bad), "--face-model", "bfm", "--json", str(tmp_path / "j.json")])
    assert rc == 1 and "bad.jpg" in capsys.readouterr().err
    assert cli([str(tmp_path / "missing.jpg"), "--face-model", "bfm"]) == 1
    assert "missing.jpg" in capsys.readouterr().err


def test_no_face_json(tmp_path):
    img = tmp_path / "black.png"
    cv2.imwrite(str(img), np.zeros((200, 300, 3), np.uint8))
    out = tmp_path / "faces.json"
    assert cli([str(img), "--face-model", "bfm", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["faces"] == []


def _fake_bfm(path, n_vertices):
    """A file in bfm_noneck_v3.pkl's layout (real shapes, made-up values, zero modes):
    vertex i on a 129-column grid (neighbours in the real topology are ~128 indices
    apart, so its triangles stay small), a dome of 140 x 180 mm in BFM units (um)."""
    i = np.arange(n_vertices)
    gx, gy = i % 129 / 128.0 * 2 - 1, i // 129 / (n_vertices // 129) * 2 - 1
    z = 40e3 * np.sqrt(np.clip(1 - gx**2 - gy**2, 0, 1))
    u = np.column_stack([gx * 70e3, gy * 90e3, z]).astype(np.float32).reshape(-1, 1)
    kp = (np.arange(68) * 500 * 3).astype(np.int64)
    d = {
        "u": u,
        "w_shp": np.zeros((3 * n_vertices, 40), np.float32),
        "w_exp": np.zeros((3 * n_vertices, 10), np.float32),
        "keypoints": np.stack([kp, kp + 1, kp + 2], 1).reshape(-1),
    }
    with open(path, "wb") as fh:
        pickle.dump(d, fh, protocol=4)


def test_bfm_mesh_and_overlay(tmp_path):
    tri = np.asarray(load_pickle(paths.BFM_TRI))
    n_v = int(tri.max()) + 1  # 38,365 vertices of bfm_noneck_v3
    bfm = tmp_path / "bfm_noneck_v3.pkl"
    _fake_bfm(bfm, n_v)
    obj, png, js = tmp_path / "m.obj", tmp_path / "o.png", tmp_path / "f.json"
    args = [
        str(IMG),
        "--face-model",
        "bfm",
        "--bfm",
        str(bfm),
        "--out",
        str(obj),
        "--png",
        str(png),
    ]
    assert cli([*args, "--json", str(js)]) == 0
    lines = obj.read_text().splitlines()
    verts = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    n_f = sum(ln.startswith("f ") for ln in lines)
    assert verts.shape == (2 * n_v, 3) and n_f == 2 * max(tri.shape)
    # each face's mesh lies on its detected face (OBJ is y-up: y = H - y_image)
    img = cv2.imread(str(IMG))
    faces = json.loads(js.read_text())["faces"]
    for k, f in enumerate(faces):
        v = verts[k * n_v : (k + 1) * n_v]
        cx, cy = v[:, 0].mean(), img.shape[0] - v[:, 1].mean()
        x1, y1, x2, y2 = f["roi_box"]
        assert x1 < cx < x2 and y1 < cy < y2
    over = cv2.imread(str(png))
    assert over.shape == img.shape
    changed = np.abs(over.astype(int) - img).sum(2) > 0
    x1, y1, x2, y2 = (int(round(v)) for v in faces[0]["roi_box"])
    assert changed[y1:y2, x1:x2].mean() > 0.05  # mesh drawn over the face
    assert changed[:, :100].mean() < 0.01  # and not elsewhere


def _fake_ict_checkpoint(path, n_id=4, n_exp=3):
    n = 12 + n_id + n_exp
    torch.manual_seed(0)
    torch.save(build_mobilenet(0.5, n).state_dict(), path)
    mean = np.zeros(n, np.float32)
    mean[[0, 5, 10]] = 1e-2  # a small frontal scaled rotation
    mean[[3, 7]] = 60.0  # centred in the crop
    meta = {
        "widen": 0.5,
        "n_id": n_id,
        "n_exp": n_exp,
        "num_params": n,
        "param_mean": mean.tolist(),
        "param_std": [1e-3] * n,
    }
    path.with_suffix(".json").write_text(json.dumps(meta))
    return n


def test_ict_regressor_json(tmp_path):
    """Wiring of --face-model ict with a randomly initialised checkpoint in the ICT
    regressor's layout (vox3d.params.ict_layout; proves the plumbing, not accuracy)."""
    ck = tmp_path / "ict.pth"
    n = _fake_ict_checkpoint(ck)
    js = tmp_path / "f.json"
    assert cli([str(IMG), "--ict-regressor", str(ck), "--json", str(js)]) == 0
    doc = json.loads(js.read_text())
    assert doc["face_model"] == "ict" and doc["layout"] == {"pose": 12, "shape": 4, "exp": 3}
    assert len(doc["faces"]) == 2 and all(len(f["params"]) == n for f in doc["faces"])


@pytest.mark.slow
def test_ict_mesh(tmp_path):
    ck = tmp_path / "ict.pth"
    _fake_ict_checkpoint(ck)
    obj = tmp_path / "m.obj"
    assert cli([str(IMG), "--ict-regressor", str(ck), "--out", str(obj)]) == 0
    n_v = sum(ln.startswith("v ") for ln in obj.read_text().splitlines())
    assert n_v > 0 and n_v % 2 == 0
