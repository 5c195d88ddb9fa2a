"""Config validation: the repository's config is valid, bad keys are named in the error."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vox3d.config import DEFAULT_CONFIG, SCHEMA, ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cfg() -> dict:
    with open(DEFAULT_CONFIG, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_repository_config_is_valid(cfg):
    validate_config(copy.deepcopy(cfg))
    assert load_config()["shard_size"] == cfg["shard_size"]


def test_defaults_filled(cfg):
    del cfg["extract"]["frame_rate"]
    del cfg["shard_size"]
    out = validate_config(cfg)
    assert out["extract"]["frame_rate"] == 5.0 and out["shard_size"] == 128
    del cfg["extract"]  # a whole missing section gets its defaults too
    assert validate_config(cfg)["extract"] == {
        "frame_rate": 5.0,
        "min_duration": 1.0,
        "decoder": "pyav",
        "keep_frames": False,
        "keep_audio": False,
        "hwaccel": "none",
        "decode_workers": "auto",
    }


def test_every_schema_key_has_a_default_or_a_value(cfg):
    with open(SCHEMA, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    for key, sub in schema["properties"].items():
        assert key in cfg or "default" in sub, key


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda c: c.update(framerate=5), "unknown config key 'framerate'"),
        (lambda c: c["extract"].update(framerate=5), "unknown config key 'extract.framerate'"),
        (lambda c: c.update(shard_size="many"), "config key 'shard_size'"),
        (lambda c: c["extract"].update(frame_rate="fast"), "config key 'extract.frame_rate'"),
        (lambda c: c["extract"].update(decoder="vlc"), "config key 'extract.decoder'"),
        (lambda c: c.update(shard_size=0), "config key 'shard_size'"),
        (lambda c: c.update(out_dir=None), "config key 'out_dir'"),
    ],
)
def test_bad_config_names_the_key(cfg, edit, words):
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert words in str(e.value)


def test_snakemake_stops_on_bad_config(tmp_path):
    """The Snakefile validates at start: a wrong type stops a dry run, naming the key."""
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        snakemake,
        "-n",
        "--cores",
        "1",
        "--config",
        "shard_size=lots",
        "bogus_key=1",
        f"out_dir={tmp_path}",
    ]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "config key 'shard_size'" in r.stderr + r.stdout
    assert "unknown config key 'bogus_key'" in r.stderr + r.stdout


@pytest.mark.parametrize(
    "out_dir, videos_dir, fragment",
    [
        ("/", None, "file-system root"),
        (".", None, "repository checkout itself"),
        ("vox3d/out", None, "source folder vox3d/"),
        ("rules", None, "source folder rules/"),
        ("/data/vox/out", "/data/vox", "overlaps the input folder"),
        ("/data/out", "/data/out/videos", "overlaps the input folder"),
        ("", None, "must not be empty"),
    ],
)
def test_paths_outside_where_allowed_are_refused(out_dir, videos_dir, fragment):
    from vox3d.config import ConfigError, validate_config

    cfg = {"out_dir": out_dir, "videos_dir": videos_dir}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "out_dir" in str(e.value) and fragment in str(e.value)


@pytest.mark.parametrize("out_dir", ["results", "/tmp/vox3d-out", "../vox3d-results"])
def test_ordinary_output_folders_are_accepted(out_dir):
    from vox3d.config import validate_config

    assert validate_config({"out_dir": out_dir})["out_dir"] == out_dir


def test_train_job_is_sized_from_the_presets(cfg):
    """The train rule's runtime takes its steps from the one table of presets
    (vox3d.train_presets.PRESETS, which vox3d.train reads too), whose names are the schema's."""
    from vox3d import jobsize, train_presets

    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    enum = schema["properties"]["train"]["properties"]["preset"]["enum"]
    assert sorted(enum) == sorted(train_presets.PRESETS)
    t = dict(cfg["train"], steps=None)
    for preset, settings in train_presets.PRESETS.items():
        assert jobsize.train_steps(dict(t, preset=preset)) == settings["steps"]
    assert jobsize.train_steps(dict(t, steps=123)) == 123
    paper = dict(t, preset="paper", device="cuda")
    want = math.ceil(train_presets.PRESETS["paper"]["steps"] / jobsize.TRAIN_IT_S_GPU * 3 / 60)
    assert jobsize.train_minutes(paper, threads=2) == want
