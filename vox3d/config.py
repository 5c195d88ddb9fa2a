"""Workflow configuration: load ``config.yaml``, validate it against the schema, fill defaults.

Validation reports every problem with the dotted name of the offending key
(``config key 'extract.frame_rate': 'fast' is not of type 'number'``,
``unknown config key 'extract.framerate'``), then runs ``snakemake.utils.validate`` on the
same schema, which fills in the schema's defaults. The Snakefile calls
:func:`validate_config` first thing, so a bad key stops a run before any job starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vox3d.paths import REPO_ROOT

SCHEMA = REPO_ROOT / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names every bad key."""


#: ``train.mode`` -> the voice models the workflow trains and evaluates.
TRAIN_VARIANTS: dict[str, tuple[str, ...]] = {
    "supervised": ("supervised",),
    "unsupervised": ("unsupervised",),
    "both": ("supervised", "unsupervised"),
}


def train_variants(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The voice models of a workflow config (``train.mode``, default supervised)."""
    return TRAIN_VARIANTS[(config.get("train", {}) or {}).get("mode", "supervised")]


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
    """Check `config` in place against the schema (naming bad keys), then fill defaults.

    A nullable key given as ``null`` text (``--config meta_csv=null``) becomes null first
    (:func:`nulls_from_strings`)."""
    schema = load_schema(schema_path)
    nulls_from_strings(config, schema)
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

    validate(config, str(schema_path), set_default=True)
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
