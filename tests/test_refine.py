"""vox3d.fitting.refine: multi-frame identity fit and the MediaPipe -> ICT correspondence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vox3d.fitting.refine import (
    MP468_ICT_JSON,
    N_MP_POINTS,
    RefineConfig,
    fit_identity,
    init_pose,
    load_mp_correspondence,
    local_vertices,
    mediapipe_observations,
    subsample_vertices,
)
from vox3d.params import euler_to_rotation

# MediaPipe face-mesh index -> Multi-PIE 68 landmark (nose tip, chin, eye corners, mouth
# corners), the anatomical check of the learned correspondence.
MP_TO_68 = {4: 30, 152: 8, 33: 36, 263: 45, 133: 39, 362: 42, 61: 48, 291: 54}


@pytest.fixture(scope="module")
def model():
    from vox3d.face.face_model import load_face_model

    return load_face_model("ict", subset="face", n_id=40, n_exp=10)


def project(model, vertex, alpha, beta, yaw, pitch, s=9.0, t=(112.0, 112.0)):
    """Image points (P, 2) of the model under the refine module's camera."""
    R = euler_to_rotation(np.radians(yaw), np.radians(pitch), 0.0)
    v = model.vertices(alpha, beta)[vertex].astype(np.float64)
    x = v @ R.T
    return np.c_[s * x[:, 0] + t[0], -s * x[:, 1] + t[1]]


def sim_error(model, a, b):
    """Mean per-vertex distance (cm) between identity meshes after similarity alignment."""
    from vox3d.face.metrics import align

    pa, pb = model.vertices(a).astype(np.float64), model.vertices(b).astype(np.float64)
    return float(np.linalg.norm(align(pa, pb, scale=True) - pb, axis=1).mean())


def scenario(model, n_frames, noise_cm, seed=0):
    rng = np.random.default_rng(seed)
    vertex = subsample_vertices(model.n_vertices, 150)
    alpha = rng.standard_normal(model.n_id)
    yaws = np.linspace(-35, 35, n_frames) if n_frames > 1 else np.array([0.0])
    obs = []
    for f, yaw in enumerate(yaws):
        beta = np.clip(rng.normal(0.15, 0.15, model.n_exp), 0, 1)
        p = project(model, vertex, alpha, beta, yaw, 10.0 * np.sin(f))
        obs.append(p + rng.normal(0, noise_cm * 9.0, p.shape))
    obs = np.asarray(obs)
    return vertex, obs, np.ones(obs.shape[:2], bool), np.full(len(vertex), noise_cm), alpha


def test_init_pose_recovers_a_weak_perspective_camera(model):
    vertex = subsample_vertices(model.n_vertices, 200)
    pts = model.mean[vertex].astype(np.float64)
    R = euler_to_rotation(0.4, -0.2, 0.1)
    x = pts @ R.T
    obs = np.c_[7.5 * x[:, 0] + 50.0, -7.5 * x[:, 1] + 80.0]
    s, R_hat, t = init_pose(pts, obs, np.ones(len(vertex), bool))
    assert s == pytest.approx(7.5, rel=1e-9)
    np.testing.assert_allclose(R_hat, R, atol=1e-9)
    np.testing.assert_allclose(t, [50.0, 80.0], atol=1e-8)


def test_joint_fit_recovers_identity_and_beats_the_mean_face_and_one_frame(model):
    vertex, obs, valid, sigma, alpha = scenario(model, 8, 0.05)
    fit = fit_identity(model, vertex, obs, valid, sigma)
    err = sim_error(model, fit.id_coef, alpha)
    mean_face = sim_error(model, np.zeros(model.n_id), alpha)
    assert err < 0.1 * mean_face, (err, mean_face)
    # the leading modes (the most geometric effect) come back nearly exactly
    assert np.corrcoef(fit.id_coef[:10], alpha[:10])[0, 1] > 0.99
    assert np.all(fit.frame_weight == 1.0)
    assert fit.rms.max() < 0.09  # cm: the noise level (0.05 per axis, 0.071 in 2D)
    # noisier points: eight frames of one person know more than the first of them alone
    vertex, obs, valid, sigma, alpha = scenario(model, 8, 0.3, seed=1)
    eight = sim_error(model, fit_identity(model, vertex, obs, valid, sigma).id_coef, alpha)
    one = sim_error(model, fit_identity(model, vertex, obs[:1], valid[:1], sigma).id_coef, alpha)
    assert eight < 0.6 * one < 0.6 * sim_error(model, np.zeros(model.n_id), alpha)


def test_joint_fit_trims_a_frame_of_somebody_else(model):
    vertex, obs, valid, sigma, alpha = scenario(model, 8, 0.05)
    rng = np.random.default_rng(7)
    other = 2.5 * rng.standard_normal(model.n_id)
    obs[3] = project(model, vertex, other, np.zeros(model.n_exp), 0.0, 0.0)
    fit = fit_identity(model, vertex, obs, valid, sigma, RefineConfig(frame_trim=3.0))
    assert fit.frame_weight[3] == 0.0 and fit.frame_weight.sum() == 7
    clean = fit_identity(model, vertex, np.delete(obs, 3, 0), valid[1:], sigma)
    assert sim_error(model, fit.id_coef, clean.id_coef) < 0.02


def test_prior_only_when_nothing_is_observed_beyond_pose(model):
    """With huge noise the data say nothing: the fit stays at the prior mean."""
    vertex, obs, valid, sigma, alpha = scenario(model, 4, 0.05)
    prior = np.random.default_rng(3).standard_normal(model.n_id)
    fit = fit_identity(
        model, vertex, obs, valid, sigma * 1e4, prior_mean=prior, prior_std=np.ones(40)
    )
    np.testing.assert_allclose(fit.id_coef, prior, atol=1e-3)


def test_joint_fit_is_deterministic(model):
    vertex, obs, valid, sigma, _ = scenario(model, 5, 0.1, seed=2)
    a = fit_identity(model, vertex, obs, valid, sigma)
    b = fit_identity(model, vertex, obs, valid, sigma)
    assert a.id_coef.tobytes() == b.id_coef.tobytes()


def test_bad_inputs_are_refused(model):
    vertex, obs, valid, sigma, _ = scenario(model, 3, 0.05)
    with pytest.raises(ValueError):
        fit_identity(model, vertex[:-1], obs, valid, sigma)
    with pytest.raises(ValueError, match="6 or more"):
        fit_identity(model, vertex, obs, np.zeros_like(valid), sigma)
    with pytest.raises(ValueError, match=str(N_MP_POINTS)):
        mediapipe_observations(np.zeros((2, 10, 3)), load_mp_correspondence(), model)


def test_committed_correspondence_is_anatomical(model):
    corr = load_mp_correspondence()
    loc = local_vertices(model, corr.vertex)
    lm = model.landmarks68
    for mp_i, k in MP_TO_68.items():
        d = np.linalg.norm(model.mean[loc[mp_i]] - model.mean[lm[k]])
        assert d < 0.35, (mp_i, k, d)
    # a left/right swap would be far: the check can fail
    assert np.linalg.norm(model.mean[loc[33]] - model.mean[lm[45]]) > 3.0
    assert len(np.unique(corr.vertex)) > 450
    doc = json.loads(MP468_ICT_JSON.read_text())
    assert doc["test"]["nme_test"] < doc["test"]["nme_test_mean_face"]


def test_correspondence_file_errors_name_the_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="c.json"):
        load_mp_correspondence(p)
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="c.json"):
        load_mp_correspondence(p)
    doc = json.loads(MP468_ICT_JSON.read_text())
    doc["sigma_cm"] = doc["sigma_cm"][:-1]
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="468"):
        load_mp_correspondence(p)


def test_local_vertices_outside_the_subset(model):
    with pytest.raises(ValueError, match="subset"):
        local_vertices(model, np.array([model.n_vertices + 20000]))
