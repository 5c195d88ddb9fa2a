"""vox3d.workflow.projection: the arithmetic on made-up numbers, and the committed throughput file."""

from __future__ import annotations

import copy
import json

import pytest

from vox3d.workflow.projection import (
    REQUIRED,
    THROUGHPUT_JSON,
    load_throughput,
    project,
    projection_markdown,
    validate_throughput,
)


def made_up() -> dict:
    """Round numbers whose hours are easy to check by hand."""
    meas = {k: {"value": 1.0, "unit": u, "source": "made up", "date": "2026-01-01"}
            for k, u in REQUIRED.items()}  # fmt: skip
    meas["extract_cpu"]["value"] = 10.0  # s of video per s per core
    meas["features_cpu"]["value"] = 100.0
    meas["fit_read_cpu"]["value"] = 500.0  # frames/s/core
    meas["fit_cpu"]["value"] = 20.0
    meas["fit_gpu"]["value"] = 1000.0  # frames/s
    meas["regressor_gpu"]["value"] = 4000.0
    meas["train_gpu"]["value"] = 10.0  # it/s
    return {
        "corpus": {
            "name": "test",
            "videos": 10,
            "utterances": 20,
            "identities": 2,
            "hours": 100.0,
            "frame_rate": 5.0,
        },  # fmt: skip
        "node": {"cores": 10, "gpus": 1, "gpu": "X"},
        "assumptions": {"core_efficiency": 1.0, "node_efficiency": 0.5, "train_steps": 36000},
        "measurements": meas,
    }


def test_arithmetic_one_node():
    p = project(made_up(), 1)
    # 100 h of video = 360,000 s; 10 cores x 10 s/s = 100 s of video per s -> 3,600 s = 1 h
    assert p.extract_h == pytest.approx(1.0)
    assert p.features_h == pytest.approx(0.1)
    # 1.8M frames / (10 cores x 500) = 360 s = 0.1 h
    assert p.fit_read_h == pytest.approx(0.1)
    assert p.fit_gpu_h == pytest.approx(0.5)  # 1.8M / 1000 = 1,800 s
    assert p.regressor_only_h == pytest.approx(0.125)
    assert p.fit_cpu_only_h == pytest.approx(2.5)
    assert p.train_h == pytest.approx(1.0)  # 36,000 it / 10 it/s
    assert p.cpu_h == pytest.approx(1.2) and p.bound == "CPU"
    assert p.total_h == pytest.approx(2.2) and p.sequential_h == pytest.approx(2.7)


def test_doubling_a_throughput_halves_its_stage():
    d = made_up()
    base = project(d, 1)
    for key, attr in (("extract_cpu", "extract_h"), ("features_cpu", "features_h"),
                      ("fit_gpu", "fit_gpu_h"), ("train_gpu", "train_h")):  # fmt: skip
        d2 = copy.deepcopy(d)
        d2["measurements"][key]["value"] *= 2
        p2 = project(d2, 1)
        assert getattr(p2, attr) == pytest.approx(getattr(base, attr) / 2), key
        others = [a for a in ("extract_h", "features_h", "fit_gpu_h", "train_h") if a != attr]
        for a in others:
            assert getattr(p2, a) == getattr(base, a)


def test_nodes_and_efficiency():
    d = made_up()
    p1, p4 = project(d, 1), project(d, 4)
    # 4 nodes at efficiency 0.5 = 2 nodes' worth; training does not scale
    assert p4.extract_h == pytest.approx(p1.extract_h / 2)
    assert p4.fit_gpu_h == pytest.approx(p1.fit_gpu_h / 2)
    assert p4.train_h == p1.train_h
    d["assumptions"]["core_efficiency"] = 0.5
    assert project(d, 1).extract_h == pytest.approx(2 * p1.extract_h)
    with pytest.raises(ValueError):
        project(d, 0)


def test_validation_names_the_problem():
    validate_throughput(made_up())
    bad = made_up()
    del bad["measurements"]["fit_gpu"]
    with pytest.raises(ValueError, match="fit_gpu"):
        validate_throughput(bad)
    bad = made_up()
    bad["measurements"]["train_gpu"]["value"] = 0
    with pytest.raises(ValueError, match="train_gpu"):
        validate_throughput(bad)
    bad = made_up()
    bad["measurements"]["extract_cpu"]["unit"] = "frames/s"
    with pytest.raises(ValueError, match="unit"):
        validate_throughput(bad)
    bad = made_up()
    bad["measurements"]["fit_cpu"]["date"] = "yesterday"
    with pytest.raises(ValueError, match="date"):
        validate_throughput(bad)
    bad = made_up()
    bad["assumptions"]["node_efficiency"] = 1.5
    with pytest.raises(ValueError, match="node_efficiency"):
        validate_throughput(bad)


def test_committed_file_validates_and_renders(tmp_path):
    data = load_throughput()
    assert data["corpus"]["videos"] == 150_480 and data["node"]["gpus"] == 1
    md = projection_markdown()  # the dataset card's call
    for k in (1, 4, 16, 64):
        assert f"{k} node" in md
    assert "I/O" in md and "h100_fit.txt" in md
    # renders from another file too, with its numbers
    d = made_up()
    f = tmp_path / "t.json"
    f.write_text(json.dumps(d))
    md2 = projection_markdown(f, nodes=(1, 2))
    assert "| extract (decode video) | CPU | 1.00 | 1.00 |" in md2
    assert THROUGHPUT_JSON.name == "throughput.json"


def test_stream_stage_reads_no_frames_back():
    """The stream stage (the default) fits frames in memory: no read-back hours, the rest
    the same, so its shard phase is never longer; the markdown says which path it is."""
    two, one = project(made_up(), 1), project(made_up(), 1, stream=True)
    assert two.fit_read_h == pytest.approx(0.1) and one.fit_read_h == 0.0
    assert one.extract_h == two.extract_h and one.fit_gpu_h == two.fit_gpu_h
    assert one.cpu_h == pytest.approx(1.1) and one.total_h == pytest.approx(2.1)
    slow_gpu = made_up()
    slow_gpu["measurements"]["fit_gpu"]["value"] = 100.0  # GPU-bound: both take the GPU's
    assert project(slow_gpu, 1, stream=True).shard_phase_h == project(slow_gpu, 1).shard_phase_h
    md, md2 = projection_markdown(stream=True), projection_markdown()
    assert "Path: the stream stage" in md and "Path: two-stage" not in md
    assert "Path: two-stage" in md2 and "Path: the stream stage" not in md2
