"""The `vox3d` command line.  Each sub-command lives in the module that does the work;
this file only maps names to ``module:function`` entry points, imported lazily so that
`vox3d --help` is fast and one broken optional dependency cannot break every command.

Each entry point is ``fn(argv: list[str]) -> int`` and parses its own arguments.
"""

from __future__ import annotations

import importlib
import sys

from vox3d import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:function", one-line help)
    "config": ("vox3d.config:cli", "print the validated configuration or one key's value"),
    "manifest": ("vox3d.media.manifest:cli", "probe videos into a manifest.tsv and shards"),
    "extract": ("vox3d.media.extract:cli", "extract 16 kHz audio and frames of one shard to HDF5"),
    "mesh": ("vox3d.face.mesh:cli", "parameters -> mesh (OBJ/PLY) and an optional render"),
    "synth": ("vox3d.synthetic.synth:cli", "generate a synthetic VoxCeleb-format corpus"),
    "image2mesh": (
        "vox3d.tools.image2mesh:cli",
        "detect faces in an image and regress 3DMM params",
    ),
    "features": ("vox3d.audio.featurefile:cli", "one utterance's CMP log-mel features to .npy"),
    "voice2mesh": ("vox3d.tools.voice2mesh:cli", "predict a face mesh from a voice recording"),
    "compare-runs": ("vox3d.tools.compare:cli", "list files that differ between two out_dirs"),
    "export": ("vox3d.report.export:cli", "export Voxceleb-3D as lhotse manifests or HF parquet"),
}


def _usage() -> str:
    lines = ["usage: vox3d COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`vox3d COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vox3d: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    mod_name, fn_name = target.split(":")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    return int(fn(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
