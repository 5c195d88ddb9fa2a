"""Benchmark of the synthetic corpus generator: where the time of one clip goes.

Prints, for one 4 s clip (100 frames) of the default configuration, CPU milliseconds per
frame of the voice synthesis, of the per-frame geometry (expression + projection), of
the Sim3DR render, of the post-processing (blur + noise), and of the x264 / AAC encoding
(ffmpeg, a child process), and the projected single-core and two-core time of the
default corpus (config ``synthetic:``; the sizes default to the ``default`` preset's).

    PYTHONPATH=. .venv/bin/python bench/synth.py [--identities 80 --videos 2 --utts 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits

from vox3d.synthetic import synth_config, synth_render, synth_rig


def _cpu() -> float:
    return time.process_time()


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    preset = synth_config.SYNTH_PRESETS["default"]
    ap.add_argument("--identities", type=int, default=preset["identities"])
    ap.add_argument("--videos", type=int, default=preset["videos_per_identity"])
    ap.add_argument("--utts", type=int, default=preset["utterances_per_video"])
    ap.add_argument("--seconds", type=float, default=preset["seconds"])
    a = ap.parse_args()
    cfg = synth_config.SynthConfig(identities=2, seconds=a.seconds)
    t0 = _cpu()
    rig = synth_rig.load_rig(cfg)
    idents = synth_rig.draw_identities(cfg, rig)
    t_setup = _cpu() - t0
    ident = idents[0]
    spec = synth_render.draw_video(cfg, ident, 0)
    bg = synth_render.background(spec)
    colors = synth_rig.albedo(rig, ident)
    light = synth_render.make_light(spec)
    with threadpool_limits(1):
        t0 = _cpu()
        truth = synth_render.draw_utterance(cfg, rig, ident, spec, 0)
        t_audio = _cpu() - t0
        T = len(truth.scale)
        anchor = synth_render.face_center_model(rig, ident.id_coef)
        base = rig.model.vertices(ident.id_coef.astype(np.float32))
        V = rig.model.n_vertices
        expb = rig.model.exp_basis.reshape(rig.model.n_exp, V * 3)
        t_geo = t_render = t_post = 0.0
        frames = []
        rng = np.random.default_rng(0)
        for t in range(T):
            c0 = _cpu()
            verts = base + np.dot(truth.exp[t].astype(np.float32), expb).reshape(V, 3)
            P = synth_render.frame_pose(truth.euler_deg[t], truth.scale[t], truth.center[t], anchor)
            img_v = synth_render.project(verts, P)
            c1 = _cpu()
            fr = synth_render.render_frame(rig, img_v, colors, bg, light)
            c2 = _cpu()
            if truth.blur_px[t] >= 2:
                fr = synth_render.motion_blur(fr, truth.blur_px[t], truth.blur_angle[t])
            fr = np.clip(fr.astype(np.int16) + rng.integers(-2, 3, fr.shape, np.int16), 0, 255)
            frames.append(fr.astype(np.uint8))
            c3 = _cpu()
            t_geo, t_render, t_post = t_geo + c1 - c0, t_render + c2 - c1, t_post + c3 - c2
        e0 = _cpu() + _child_cpu()
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as td:
            synth_render.encode_clip(frames, truth.utt.audio, Path(td) / "x.mp4")
        t_enc = _cpu() + _child_cpu() - e0
    per = {
        "voice synthesis + motion": t_audio,
        "geometry": t_geo,
        "render (Sim3DR, lit)": t_render,
        "blur + noise": t_post,
        "encode (ffmpeg x264 + aac)": t_enc,
    }
    total = sum(per.values())
    print(f"one {a.seconds:g} s clip ({T} frames), CPU ms per frame:")
    for k, v in per.items():
        print(f"  {k:<28} {1000 * v / T:7.2f}")
    print(f"  {'total':<28} {1000 * total / T:7.2f}")
    n_clips = a.identities * a.videos * a.utts
    print(f"setup (model, identities): {t_setup:.2f} s CPU")
    print(
        f"default corpus ({n_clips} clips, {n_clips * T} frames): {n_clips * total:.0f} s on "
        f"one core, ~{n_clips * total / 2:.0f} s on two"
    )


if __name__ == "__main__":
    main()
