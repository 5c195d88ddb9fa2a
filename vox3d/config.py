"""Workflow configuration: ``config.yaml`` (the one home of every default), the schema
(types and ranges, no defaults), validation and the frozen per-stage settings objects.

``config.yaml`` holds the default of every key, documented beside its value; the schema
says only what a value may be. :func:`default` reads one default (``default("train.lr")``)
and :func:`setting` declares a settings dataclass field whose default is that value, so a
stage's settings object (:class:`vox3d.fitting.fit.FitConfig`, :class:`vox3d.voice.train.TrainSettings`,
...) never restates a number; ``tests/test_config.py`` walks the schema and proves each
default has this one home.

Validation first fills what a config leaves out from ``config.yaml`` (:func:`with_defaults`),
then reports every problem with the dotted name of the offending key
(``config key 'extract.frame_rate': 'fast' is not of type 'number'``,
``unknown config key 'extract.framerate'``) and runs ``snakemake.utils.validate`` on the
same schema. The Snakefile calls :func:`validate_config` first thing, so a bad key stops a
run before any job starts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from vox3d.paths import REPO_ROOT

SCHEMA = REPO_ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names every bad key."""


@functools.cache
def _defaults() -> dict:
    try:
        with open(DEFAULT_CONFIG, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the default configuration {DEFAULT_CONFIG}: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{DEFAULT_CONFIG}: expected a mapping of config keys")
    return d


def defaults() -> dict:
    """Every key's default: ``config.yaml``, parsed once (a deep copy, free to change)."""
    return copy.deepcopy(_defaults())


def default(key: str) -> Any:
    """The default of the dotted config key `key` (``"train.param_weight"`` -> 0.2), read
    from ``config.yaml``; KeyError naming the key when it has none."""
    node: Any = _defaults()
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"config key {key!r} has no default in {DEFAULT_CONFIG.name}")
        node = node[part]
    return copy.deepcopy(node)


def with_defaults(config: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict:
    """`config` over the defaults (`base`, default :func:`defaults`): sections merged key by
    key, any value the config gives (``null`` included) kept.  Returns a new dict."""
    out = copy.deepcopy(dict(_defaults() if base is None else base))
    for k, v in config.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = with_defaults(v, out[k])
        else:
            out[k] = copy.deepcopy(v)
    return out


def section(name: str, values: Mapping[str, Any] | None = None) -> dict:
    """Config section `name` (dotted, ``"train"``) with `values` over its defaults: what a
    stage reads when it is handed a section mapping that may leave keys out."""
    base = default(name)
    if not isinstance(base, Mapping):
        raise KeyError(f"config key {name!r} is not a section")
    return with_defaults(values or {}, base)


def setting(key: str) -> Any:
    """A dataclass field whose default is config key `key`'s (:func:`default`); the key is
    kept in the field's metadata (``config_key``) so tests can follow it."""
    value = default(key)
    meta = {"config_key": key}
    if isinstance(value, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=meta)
    return dataclasses.field(default=value, metadata=meta)


def preset_setting(presets: Mapping[str, Mapping[str, Any]], preset_key: str, key: str) -> Any:
    """A dataclass field whose default is `key` of the default preset: ``presets[p][key]``
    with ``p`` config key `preset_key`'s default (``"train.preset"``); for the fields whose
    config value null means "the preset's"."""
    value = presets[default(preset_key)][key]
    if isinstance(value, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value))
    return dataclasses.field(default=value)


S = TypeVar("S", bound="Settings")


class Settings:
    """Mixin of the frozen per-stage settings dataclasses: ``SECTION`` names their config
    section (dotted); :meth:`from_section` builds one from that section (absent keys take
    their defaults, keys of ``OTHER_KEYS`` belong to another object and are passed over)."""

    SECTION: ClassVar[str] = ""
    OTHER_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_section(cls: type[S], section: Mapping[str, Any] | None = None, **extra: Any) -> S:
        """The settings of config section ``SECTION`` given as a mapping (``config["train"]``);
        `extra` sets fields that are not config keys.  ValueError names an unknown key."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        section = dict(section or {})
        unknown = sorted(set(section) - names - set(cls.OTHER_KEYS))
        if unknown:
            raise ValueError(
                f"unknown {cls.SECTION} setting(s) {', '.join(unknown)} for {cls.__name__} "
                f"(known: {', '.join(sorted(names))})"
            )
        kw = {k: v for k, v in section.items() if k in names}
        return cls(**kw, **extra)

    @classmethod
    def from_config(cls: type[S], config: Mapping[str, Any], **extra: Any) -> S:
        """The settings of a whole (validated) config: its ``SECTION``."""
        node: Any = config
        for part in cls.SECTION.split("."):
            node = (node or {}).get(part) if isinstance(node, Mapping) else None
        return cls.from_section(node, **extra)


#: ``train.mode`` -> the voice models the workflow trains and evaluates.
TRAIN_VARIANTS: dict[str, tuple[str, ...]] = {
    "supervised": ("supervised",),
    "unsupervised": ("unsupervised",),
    "both": ("supervised", "unsupervised"),
}


def train_variants(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The voice models of a workflow config (``train.mode``; absent: its default)."""
    mode = (config.get("train", {}) or {}).get("mode")
    return TRAIN_VARIANTS[default("train.mode") if mode is None else mode]


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def schema_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every schema violation in `config`, one sentence each naming the key (sorted)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    msgs = []
    for e in cls(schema).iter_errors(config):
        where = list(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, Mapping):
            allowed = set(e.schema.get("properties", {}))
            for k in sorted(set(e.instance) - allowed):
                msgs.append(
                    f"unknown config key '{_dotted([*where, k])}' "
                    f"(allowed here: {', '.join(sorted(allowed))})"
                )
        else:
            msgs.append(f"config key '{_dotted(where)}': {e.message}")
    return sorted(set(msgs))


def load_schema(path: str | os.PathLike = SCHEMA) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


#: Strings that mean null (YAML's spellings): ``--config meta_csv=null`` reaches the config
#: as the string "null", since Snakemake parses command-line values with YAML's base loader.
NULL_STRINGS = ("null", "Null", "NULL", "~")
#: Strings that mean a boolean (YAML 1.2's spellings), for keys of schema type boolean:
#: ``--config extract='{keep_frames: true}'`` reaches the config as the string "true".
BOOL_STRINGS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
                "FALSE": False}  # fmt: skip


def nulls_from_strings(config: dict, schema: Mapping[str, Any]) -> dict:
    """Turn :data:`NULL_STRINGS` into ``None``, in place, for every key whose schema type
    admits null (``videos_dir``, ``meta_csv``, ``assets.bfm``, ...): on the command line
    ``key=null`` (like ``key=``) sets such a key to null, never to a file named "null".
    Likewise :data:`BOOL_STRINGS` become booleans for keys of type boolean."""
    props = schema.get("properties", {})
    for k, v in config.items():
        sub = props.get(k, {})
        types = sub.get("type", [])
        if (
            isinstance(v, str)
            and v in NULL_STRINGS
            and "null" in (types if isinstance(types, list) else [types])
        ):
            config[k] = None
        elif (
            isinstance(v, str)
            and v in BOOL_STRINGS
            and "boolean" in (types if isinstance(types, list) else [types])
        ):
            config[k] = BOOL_STRINGS[v]
        elif isinstance(v, dict) and isinstance(sub, Mapping):
            nulls_from_strings(v, sub)
    return config


def validate_config(config: dict, schema_path: str | os.PathLike = SCHEMA) -> dict:
    """Fill what `config` leaves out from ``config.yaml`` (:func:`with_defaults`), in place,
    then check it against the schema, naming every bad key.

    A nullable key given as ``null`` text (``--config meta_csv=null``) becomes null first
    (:func:`nulls_from_strings`)."""
    schema = load_schema(schema_path)
    nulls_from_strings(config, schema)
    filled = with_defaults(config)
    config.clear()
    config.update(filled)
    errors = schema_errors(config, schema)
    if errors:
        raise ConfigError(
            f"invalid configuration ({len(errors)} problem(s), schema {Path(schema_path).name}):\n  "
            + "\n  ".join(errors)
        )
    errors = path_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    from snakemake.utils import validate

    validate(config, str(schema_path), set_default=False)
    return config


#: Folders of the source tree that outputs must never be written into.
SOURCE_DIRS = ("vox3d", "Sim3DR", "rules", "scripts", "schemas", "envs", "profiles", "tests",
               "bench", "report", ".git")  # fmt: skip


def path_errors(config: Mapping[str, Any], repo_root: Path = REPO_ROOT) -> list[str]:
    """Paths given where they are not allowed, naming the key.

    `out_dir` is deleted from and written to by every stage, so it may be anywhere except a
    place whose loss would hurt: the file-system root, the home folder, the repository
    checkout itself or one of its source folders, or an input folder (`videos_dir`).
    """
    errors = []
    out_dir = config.get("out_dir")
    if isinstance(out_dir, str) and out_dir.strip():
        out = Path(out_dir).expanduser()
        out = (out if out.is_absolute() else repo_root / out).resolve()
        forbidden = {Path("/").resolve(): "the file-system root", Path.home().resolve(): "the home folder",
                     repo_root.resolve(): "the repository checkout itself"}  # fmt: skip
        if out in forbidden:
            errors.append(f"config key 'out_dir': {out_dir!r} is {forbidden[out]}")
        for d in SOURCE_DIRS:
            src = (repo_root / d).resolve()
            if out == src or src in out.parents:
                errors.append(f"config key 'out_dir': {out_dir!r} is inside the source folder {d}/")
        videos = config.get("videos_dir")
        if isinstance(videos, str) and videos.strip():
            v = Path(videos).expanduser()
            v = (v if v.is_absolute() else repo_root / v).resolve()
            if out == v or v in out.parents or out in v.parents:
                errors.append(
                    f"config key 'out_dir': {out_dir!r} overlaps the input folder "
                    f"videos_dir {videos!r}"
                )
    elif out_dir is not None:
        errors.append("config key 'out_dir': must not be empty")
    return errors


def load_config(
    path: str | os.PathLike = DEFAULT_CONFIG, overrides: Mapping[str, Any] | None = None
) -> dict:
    """``config.yaml`` with `overrides` merged in (nested dicts merged), validated."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    for k, v in (overrides or {}).items():
        if isinstance(v, Mapping) and isinstance(config.get(k), dict):
            config[k] = {**config[k], **v}
        else:
            config[k] = v
    return validate_config(config)


def cli(argv: list[str]) -> int:
    """``vox3d config [KEY] [--configfile F ...] [--set KEY=VALUE ...]``: the configuration a
    run gets (config.yaml's defaults, then each file, then each ``--set``; validated), as
    YAML, or one key's value."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="vox3d config",
        description="Print the validated configuration: config.yaml's defaults with the given "
        "files and values over them (what `snakemake --configfile F --config K=V` runs with).",
    )
    ap.add_argument("key", nargs="?", help="a dotted key (train.lr, fit); default: everything")
    ap.add_argument("--configfile", action="append", default=[], help="a YAML file over it")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a value over it (YAML, as snakemake --config parses it: fit.batch_size=64)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    config: dict = {}
    try:
        for path in a.configfile:
            with open(path, encoding="utf-8") as fh:
                extra = yaml.safe_load(fh) or {}
            if not isinstance(extra, dict):
                raise ConfigError(f"{path}: expected a mapping of config keys")
            config = with_defaults(extra, config)
        for item in a.set:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
            node = yaml.safe_load(text)
            for part in reversed(key.split(".")):
                node = {part: node}
            config = with_defaults(node, config)
        validate_config(config)
        out: Any = config
        if a.key:
            for part in a.key.split("."):
                if not isinstance(out, Mapping) or part not in out:
                    raise ConfigError(f"no config key {a.key!r}")
                out = out[part]
    except (ConfigError, OSError, yaml.YAMLError) as e:
        print(f"vox3d config: {e}", file=sys.stderr)
        return 1
    text = yaml.safe_dump(out, sort_keys=False, default_flow_style=False)
    print(text.removesuffix("\n...\n").rstrip("\n"))  # a scalar: no end-of-document mark
    return 0
