"""Lay out the ignored folder `.gpudata/` that the GPU benches carry to the device machine
(bench/h200_train_rule.sh, bench/h200_regressor.sh, bench/h100.sh), from ../shared/data
and a folder of cp312 wheels.

    .venv/bin/python bench/gpudata.py [--data ../shared/data] [--wheels DIR] [--out .gpudata]

What it writes (laid out like ../shared/data, for VOX3D_DATA on the machine):
- ict-facekit/ICT-FaceKit.tar.xz: a subset of the archive with the archive's own internal
  paths (neutral mesh, identity000-039, the 10 expressions of
  vox3d.face.ict_facekit.ICT_DEFAULT_EXPRESSIONS, vertex_indices.json with its "expressions"
  list cut to those 10, LICENSE, README, SOURCE_COMMIT, the .mtl).  The full archive is 32 MB
  and the device tool carries 64 MiB in all; the subset parses to the same arrays for
  n_id 40 / n_exp 10, checked here by the face-model digest that the committed regressor's
  json records (gen_model_sha256).
- 3ddfa_v2/FaceBoxesProd.pth (and mb05_120x120.pth with --mb05).
- whl/: the wheels of --wheels, copied (the machine has no registry).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

from vox3d.face.ict_facekit import ICT_DEFAULT_EXPRESSIONS
from vox3d.paths import PACKAGE_DATA

N_ID = 40


def keep_member(m: tarfile.TarInfo) -> bool:
    """Whether the subset keeps archive member `m`: every directory and non-OBJ file, and
    the OBJs of the neutral mesh, identities 0-39 and the default expressions."""
    base = m.name.rsplit("/", 1)[-1]
    keep_obj = {"generic_neutral_mesh.obj"} | {f"identity{i:03d}.obj" for i in range(N_ID)}
    keep_obj |= {f"{e}.obj" for e in ICT_DEFAULT_EXPRESSIONS}
    return m.isdir() or not base.endswith(".obj") or base in keep_obj


def write_subset(src: Path, dst: Path) -> int:
    """Write the subset archive `dst` from the full ICT-FaceKit archive `src`; returns bytes."""
    tmp = dst.with_suffix(".tmp")
    with tarfile.open(src, "r:xz") as tin, tarfile.open(tmp, "w:xz", preset=6) as tout:
        for m in tin.getmembers():
            if not keep_member(m):
                continue
            if m.isdir():
                tout.addfile(m)
                continue
            data = tin.extractfile(m).read()
            if m.name.endswith("vertex_indices.json"):
                meta = json.loads(data)
                if "expressions" in meta:
                    meta["expressions"] = [
                        e for e in meta["expressions"] if e in ICT_DEFAULT_EXPRESSIONS
                    ]
                data = json.dumps(meta).encode()
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    tmp.replace(dst)
    return dst.stat().st_size


def check_digest(archive: Path) -> str:
    """The face-model digest of the subset (must equal the committed json's)."""
    from vox3d.fitting.ict_generator import build_gen_model

    return build_gen_model(N_ID, len(ICT_DEFAULT_EXPRESSIONS), archive).digest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--wheels", type=Path, default=None, help="folder of cp312 wheels to copy")
    ap.add_argument("--out", type=Path, default=Path(".gpudata"))
    ap.add_argument("--mb05", action="store_true", help="also copy the 3DDFA-V2 mb05 weights")
    a = ap.parse_args(argv)
    (a.out / "ict-facekit").mkdir(parents=True, exist_ok=True)
    (a.out / "3ddfa_v2").mkdir(parents=True, exist_ok=True)
    arc = a.out / "ict-facekit" / "ICT-FaceKit.tar.xz"
    size = write_subset(a.data / "ict-facekit" / "ICT-FaceKit.tar.xz", arc)
    digest = check_digest(arc)
    want = json.loads((PACKAGE_DATA / "ict_regressor.json").read_text())["gen_model_sha256"]
    print(
        f"{arc}: {size / 1e6:.1f} MB; gen_model digest {digest[:12]} (committed json {want[:12]})"
    )
    if digest != want:
        print("FATAL: the subset does not parse to the committed face model", file=sys.stderr)
        return 1
    for name in ["FaceBoxesProd.pth"] + (["mb05_120x120.pth"] if a.mb05 else []):
        shutil.copyfile(a.data / "3ddfa_v2" / name, a.out / "3ddfa_v2" / name)
    if a.wheels is not None:
        (a.out / "whl").mkdir(exist_ok=True)
        for w in sorted(a.wheels.glob("*.whl")):
            shutil.copyfile(w, a.out / "whl" / w.name)
    total = sum(p.stat().st_size for p in a.out.rglob("*") if p.is_file())
    print(f"{a.out}: {total / 2**20:.1f} MiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
