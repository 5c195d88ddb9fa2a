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
    (vox3d.voice.train_presets.PRESETS, which vox3d.voice.train reads too), whose names are the schema's."""
    from vox3d.voice import train_presets
    from vox3d.workflow import jobsize

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


# --------------------------------------------------------------------------------------
# one home per default
# --------------------------------------------------------------------------------------


def _schema_leaves(node: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for k, sub in node.get("properties", {}).items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_schema_leaves(sub, key) if "properties" in sub else {key: sub})
    return out


def _library_sources() -> list[Path]:
    return sorted([*(REPO / "vox3d").rglob("*.py"), *(REPO / "scripts").glob("*.py")])


def restated_defaults(paths, defaults_by_name, root: Path = REPO) -> list[str]:
    """Places in `paths` that restate a config default: a dataclass field, a function
    parameter's default, a ``.get`` / ``.pop`` fallback or an argparse ``default=`` whose name is a config key's last part and
    whose literal value is that key's default (``param_weight: float = 0.2``,
    ``s.get("device", "auto")``, ``add_argument("--n-mfcc", default=20)``)."""
    import ast

    def literal(node):
        try:
            return True, ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return False, None

    def restates(name, node):
        ok, value = literal(node)
        if not ok or value is None or name not in defaults_by_name:
            return False
        return any(
            type(value) is type(d) and value == d for d in defaults_by_name[name]
        )  # 1 == True and 0 == False, but a flag is not a count

    hits = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(root)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for st in node.body:
                    if (
                        isinstance(st, ast.AnnAssign)
                        and isinstance(st.target, ast.Name)
                        and st.value is not None
                        and restates(st.target.id, st.value)
                    ):
                        hits.append(f"{where}:{st.lineno}: field {st.target.id}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                a = node.args
                pos = [*a.posonlyargs, *a.args]
                pairs = [*zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True)]
                pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
                for arg, dflt in pairs:
                    if restates(arg.arg, dflt):
                        hits.append(f"{where}:{node.lineno}: parameter {arg.arg}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f, args = node.func.attr, node.args
                if (
                    f in ("get", "pop", "setdefault")
                    and len(args) == 2
                    and isinstance(args[0], ast.Constant)
                    and isinstance(args[0].value, str)
                    and restates(args[0].value, args[1])
                ):
                    hits.append(f"{where}:{node.lineno}: .{f}({args[0].value!r}, ...)")
                if f == "add_argument":
                    flags = [
                        a.value
                        for a in args
                        if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    ]
                    for kw in node.keywords:
                        if kw.arg == "default" and flags:
                            name = flags[-1].lstrip("-").replace("-", "_")
                            if restates(name, kw.value):
                                hits.append(f"{where}:{node.lineno}: argument {flags[-1]}")
    return sorted(set(hits))


def test_every_default_has_one_home(cfg):
    """Walk the schema: every key has its default in config.yaml, the schema states none,
    and no library module or script restates one as a literal (a field default, a
    ``.get`` fallback or an argparse default): they read :func:`vox3d.config.default`
    (through :func:`vox3d.config.setting`) or the stage's settings object."""
    with open(SCHEMA, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    leaves = _schema_leaves(schema)

    def has_default(node) -> bool:
        if isinstance(node, dict):
            return "default" in node or any(has_default(v) for v in node.values())
        return isinstance(node, list) and any(has_default(v) for v in node)

    assert not has_default(schema), "the schema states a default; its home is config.yaml"
    from vox3d.config import default

    missing = []
    by_name: dict[str, list] = {}
    for key in leaves:
        try:
            value = default(key)
        except KeyError:
            missing.append(key)
            continue
        by_name.setdefault(key.rsplit(".", 1)[-1], []).append(value)
    assert not missing, f"config keys without a default in config.yaml: {missing}"
    hits = restated_defaults(_library_sources(), by_name)
    assert not hits, "defaults restated outside config.yaml:\n  " + "\n  ".join(hits)


def test_the_restatement_scan_finds_restatements(tmp_path):
    """Control: the scan of the test above flags each kind of restatement it claims to."""
    src = tmp_path / "mod.py"
    src.write_text(
        "import argparse\n"
        "class C:\n    param_weight: float = 0.2\n    other: int = 3\n"
        "def f(s):\n    return s.get('device', 'auto'), s.get('device', 'cpu')\n"
        "argparse.ArgumentParser().add_argument('--n-mfcc', type=int, default=20)\n"
        "def g(x, frame_rate=5.0, *, val_fraction=0.2, other=3):\n    return x\n",
        encoding="utf-8",
    )
    by_name = {"param_weight": [0.2], "device": ["auto"], "n_mfcc": [20], "other": [4],
               "frame_rate": [5.0], "val_fraction": [0.2]}  # fmt: skip
    hits = [h.split(": ", 1)[1] for h in restated_defaults([src], by_name, root=tmp_path)]
    assert sorted(hits) == [
        ".get('device', ...)", "argument --n-mfcc", "field param_weight",
        "parameter frame_rate", "parameter val_fraction",
    ]  # fmt: skip


def _stage_settings():
    from vox3d.audio.fbank import FeatureConfig
    from vox3d.fitting.quality import Thresholds
    from vox3d.media.extract import ExtractSettings
    from vox3d.voice.evaluate import EvaluateSettings
    from vox3d.voice.train import TrainSettings

    return [ExtractSettings, FeatureConfig, Thresholds, TrainSettings, EvaluateSettings]


@pytest.mark.parametrize("cls", _stage_settings(), ids=lambda c: c.__name__)
def test_stage_settings_read_their_section_from_config_yaml(cls):
    """Each stage's settings object: every field that is a key of its section takes that
    key's default from config.yaml (declared with vox3d.config.setting), it is frozen, it
    takes values from its section and names an unknown key."""
    import dataclasses

    from vox3d.config import default

    section = default(cls.SECTION)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    shared = sorted(set(fields) & set(section))
    assert shared, cls
    for name in shared:
        assert fields[name].metadata.get("config_key") == f"{cls.SECTION}.{name}", name
    st = cls()
    assert {k: getattr(st, k) for k in shared} == {
        k: (float(section[k]) if cls.__name__ == "Thresholds" else section[k]) for k in shared
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(st, shared[0], section[shared[0]])
    with pytest.raises(ValueError, match="unknown .*bogus_key"):
        cls.from_section({"bogus_key": 1})
    assert cls.from_config({}) == st


def test_train_settings_resolve_the_preset_and_the_overrides():
    from vox3d.voice.train import TrainSettings
    from vox3d.voice.train_presets import PRESETS

    st = TrainSettings.from_section({"preset": "paper", "lr": 5e-4, "ratio_weight": 0.0})
    cfg = st.run_config()
    assert cfg.steps == PRESETS["paper"]["steps"] and cfg.lr == 5e-4 and cfg.ratio_weight == 0.0
    assert cfg.param_weight == TrainSettings().param_weight == 0.2  # config.yaml's
    off = st.run_config(space="params")
    assert off.vertex_weight == 0.0 and off.ratio_weight == 0.0 and off.param_weight == 0.2


def test_with_defaults_keeps_what_the_config_says():
    from vox3d.config import default, section, with_defaults

    c = with_defaults({"train": {"lr": None, "hidden": [8]}, "shard_size": 7})
    assert c["train"]["lr"] is None and c["train"]["hidden"] == [8] and c["shard_size"] == 7
    assert c["train"]["param_weight"] == default("train.param_weight")
    assert c["train"]["voice_encoder"] == default("train.voice_encoder")
    assert section("evaluate", {"seed": 3})["seed"] == 3
    assert section("evaluate")["bootstrap"] == default("evaluate.bootstrap")
    with pytest.raises(KeyError, match="train.no_such_key"):
        default("train.no_such_key")


def test_config_command_prints_what_a_run_gets(tmp_path, capsys):
    from vox3d.tools.cli import main

    assert main(["config", "fit.batch_size"]) == 0
    assert capsys.readouterr().out.strip() == "32"
    over = tmp_path / "over.yaml"
    over.write_text("fit:\n  batch_size: 256\n", encoding="utf-8")
    assert main(["config", "fit", "--configfile", str(over), "--set", "fit.precision=bf16"]) == 0
    fit = yaml.safe_load(capsys.readouterr().out)
    assert fit["batch_size"] == 256 and fit["precision"] == "bf16" and fit["device"] == "auto"
    assert main(["config", "--set", "fit.batch_size=many"]) == 1
    assert "config key 'fit.batch_size'" in capsys.readouterr().err
    assert main(["config", "fit.no_such_key"]) == 1
    assert "no config key 'fit.no_such_key'" in capsys.readouterr().err
