"""ICT-FaceKit ("ICT Face Model Light"): its topology facts, its reader and the parsed cache.

The facts are the upstream README's (0-indexed, inclusive vertex ranges, the Multi-PIE
68-point landmarks); :func:`load_ict_arrays` reads the archive (or a ``FaceXModel/``
folder) into arrays, all modes and the full topology, and keeps them in a cache keyed by
the source's sha256.  :func:`vox3d.face.face_model.load_face_model` turns the arrays into a
:class:`vox3d.face.face_model.FaceModel`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from pathlib import Path

import numpy as np

from vox3d import paths
from vox3d.io import atomic_path
from vox3d.safeload import BadModelFileError

# ---------------------------------------------------------------------------------------
# ICT-FaceKit facts (upstream README.md, 0-indexed, inclusive ranges)
# ---------------------------------------------------------------------------------------

#: Number of vertices of the ICT-FaceKit topology.
ICT_N_VERTICES = 26719
#: Multi-PIE 68-point landmark vertex indices (upstream README).
ICT_LANDMARKS68 = np.array(
    [1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272,
     4088, 3443, 268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942,
     4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751,
     3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957,
     5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966],
    dtype=np.int64,
)  # fmt: skip
#: Named vertex ranges (first, last), inclusive (upstream README geometry tables).
ICT_RANGES: dict[str, tuple[int, int]] = {
    "face": (0, 9408),
    "narrow_face": (0, 6705),
    "head_neck": (9409, 11247),
    "mouth_socket": (11248, 13293),
    "eye_socket_left": (13294, 13677),
    "eye_socket_right": (13678, 14061),
    "gums_tongue": (14062, 17038),
    "teeth": (17039, 21450),
    "eyeball_left": (21451, 23020),
    "eyeball_right": (23021, 24590),
    "lacrimal_left": (24591, 24794),
    "lacrimal_right": (24795, 24998),
    "eye_blend_left": (24999, 25022),
    "eye_blend_right": (25023, 25046),
    "eye_occlusion_left": (25047, 25198),
    "eye_occlusion_right": (25199, 25350),
    "eyelashes_left": (25351, 26034),
    "eyelashes_right": (26035, 26718),
}
#: Vertex subsets (prefixes of the topology) selectable by `load_face_model(subset=...)`.
ICT_SUBSETS: dict[str, int] = {
    "head": ICT_N_VERTICES,
    "face_neck": 11248,
    "face": 9409,
    "narrow_face": 6706,
}
#: Default expression order: the first `n_exp` are used unless `exp_names` is given.  The
#: ten most useful for talking faces first, then the remaining upstream names in their
#: upstream (alphabetical) order.
ICT_DEFAULT_EXPRESSIONS = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmile_L",
    "mouthSmile_R",
    "eyeBlink_L",
    "eyeBlink_R",
    "browInnerUp_L",
    "browInnerUp_R",
)

#: Format version of the ICT cache file (bump when its contents change).
_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------
# ICT-FaceKit: parsing and cache
# ---------------------------------------------------------------------------------------


def parse_obj_vertices(data: bytes, source: str = "<obj>") -> np.ndarray:
    """Vertex positions ``(V, 3) float64`` of an OBJ file's ``v`` lines (extra values, e.g.
    colours or w, are ignored)."""
    lines = [ln[2:] for ln in data.split(b"\n") if ln[:2] in (b"v ", b"v\t")]
    if not lines:
        raise BadModelFileError(f"{source}: no vertices in OBJ")
    values = b" ".join(lines).split()
    if len(values) != 3 * len(lines):  # extra values on some lines: take x y z of each
        parts = [ln.split() for ln in lines]
        if any(len(p) < 3 for p in parts):
            raise BadModelFileError(f"{source}: a vertex line has fewer than 3 coordinates")
        values = [x for p in parts for x in p[:3]]
    try:
        return np.array(values, dtype=np.float64).reshape(-1, 3)
    except ValueError as e:
        raise BadModelFileError(f"{source}: bad vertex line ({e})") from e


def parse_obj_faces(data: bytes, source: str = "<obj>") -> np.ndarray:
    """Triangles ``(F, 3) int32`` (0-based) of an OBJ's ``f`` lines; polygons fanned
    (a, b, c, d) -> (a, b, c), (a, c, d), keeping their winding.  Negative indices resolve
    relative to the vertices read so far."""
    tris: list[tuple[int, int, int]] = []
    nv = 0
    for line in data.splitlines():
        if line.startswith(b"v "):
            nv += 1
            continue
        if not line.startswith(b"f "):
            continue
        idx = []
        for tok in line.split()[1:]:
            i = int(tok.split(b"/", 1)[0])
            idx.append(i - 1 if i > 0 else nv + i)
        if len(idx) < 3:
            raise BadModelFileError(f"{source}: face with {len(idx)} vertices")
        for k in range(1, len(idx) - 1):
            tris.append((idx[0], idx[k], idx[k + 1]))
    if not tris:
        raise BadModelFileError(f"{source}: no faces in OBJ")
    return np.array(tris, dtype=np.int32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.suffix in (".obj", ".json") and f.is_file():
                h.update(f.name.encode() + b"\0")
                with open(f, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                        h.update(chunk)
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def _read_ict_files(path: Path) -> dict[str, bytes]:
    """``{basename: bytes}`` of the FaceXModel OBJ / JSON files in an archive or folder."""
    files: dict[str, bytes] = {}
    if path.is_dir():
        d = path / "FaceXModel" if (path / "FaceXModel").is_dir() else path
        for f in sorted(d.iterdir()):
            if f.suffix in (".obj", ".json"):
                files[f.name] = f.read_bytes()
    elif path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    parts = m.name.split("/")
                    if (
                        len(parts) >= 2
                        and parts[-2] == "FaceXModel"
                        and (parts[-1].endswith(".obj") or parts[-1].endswith(".json"))
                    ):
                        fh = tar.extractfile(m)
                        if fh is not None:
                            files[parts[-1]] = fh.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BadModelFileError(f"{path}: not a readable ICT-FaceKit archive ({e})") from e
    else:
        raise BadModelFileError(
            f"{path}: ICT-FaceKit not found (download github.com/ICT-VGL/ICT-FaceKit and point "
            "config assets.ict_facekit at its FaceXModel/ folder or an archive of it)"
        )
    if "generic_neutral_mesh.obj" not in files:
        raise BadModelFileError(f"{path}: no FaceXModel/generic_neutral_mesh.obj inside")
    return files


def parse_ict(path: str | os.PathLike, progress: bool = True) -> dict[str, np.ndarray]:
    """Parse ICT-FaceKit (archive or folder) into arrays (all modes, full topology):
    ``mean (V,3)``, ``id_basis (100,V,3)``, ``exp_basis (53,V,3)`` float32 cm,
    ``triangles (F,3) int32``, ``exp_names``, ``rigid``, ``fitting`` index arrays."""
    path = Path(path)
    files = _read_ict_files(path)
    neutral_bytes = files["generic_neutral_mesh.obj"]
    neutral = parse_obj_vertices(neutral_bytes, f"{path}:generic_neutral_mesh.obj")
    tri = parse_obj_faces(neutral_bytes, f"{path}:generic_neutral_mesh.obj")
    meta = {}
    if "vertex_indices.json" in files:
        meta = json.loads(files["vertex_indices.json"])
    exp_names = list(meta.get("expressions") or [])
    if not exp_names:
        exp_names = sorted(
            n[:-4]
            for n in files
            if n.endswith(".obj")
            and n != "generic_neutral_mesh.obj"
            and not n.startswith("identity")
        )
    id_names = sorted(n for n in files if re.fullmatch(r"identity\d+\.obj", n))
    names = id_names + [f"{e}.obj" for e in exp_names]
    missing = [n for n in names if n not in files]
    if missing:
        raise BadModelFileError(f"{path}: missing FaceXModel files {missing[:5]}")
    V = len(neutral)
    modes = np.empty((len(names), V, 3), dtype=np.float32)
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="parse ICT-FaceKit", unit="obj", leave=False)
    for i, n in enumerate(it):
        v = parse_obj_vertices(files.pop(n), f"{path}:{n}")
        if v.shape != neutral.shape:
            raise BadModelFileError(f"{path}:{n}: {len(v)} vertices, neutral mesh has {V}")
        modes[i] = v - neutral
    tri = orient_outwards(neutral, tri)
    return {
        "mean": neutral.astype(np.float32),
        "id_basis": modes[: len(id_names)],
        "exp_basis": modes[len(id_names) :],
        "triangles": tri,
        "exp_names": np.array(exp_names),
        "rigid": np.array(meta.get("idx_to_rigid_verts", []), dtype=np.int64),
        "fitting": np.array(meta.get("idx_to_fitting_verts", []), dtype=np.int64),
    }


def orient_outwards(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Return `triangles` flipped as a whole if their area-weighted normals point inwards
    (towards the centroid) on balance, so they are counter-clockwise seen from outside."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles)
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    n = np.cross(b - a, c - a)
    out = ((a + b + c) / 3 - v.mean(axis=0) * 1.0) * n
    if out.sum() < 0:
        t = t[:, [0, 2, 1]]
    return np.ascontiguousarray(t, dtype=np.int32)


def ict_cache_path(source: Path, digest: str) -> Path:
    return paths.cache_dir() / f"ict_facekit_{digest[:16]}_v{_CACHE_VERSION}.npz"


def load_ict_arrays(
    path: str | os.PathLike | None = None, *, use_cache: bool = True, verbose: bool = False
) -> dict[str, np.ndarray]:
    """All ICT arrays (see :func:`parse_ict`), from the cache when its key (the sha256 of
    the archive, or of the folder's OBJ/JSON files) matches, else parsed and cached.

    A cache file that cannot be read (empty, truncated, not an npz, arrays missing) is
    ignored with a ``RuntimeWarning`` naming it; the source is parsed again and the cache
    rewritten atomically.  A cache that cannot be written only warns.  An error while
    parsing is a :class:`BadModelFileError` naming the source path."""
    src = Path(path) if path is not None else Path(paths.ICT_FACEKIT)
    if not src.exists() and not src.is_absolute() and (paths.REPO_ROOT / src).exists():
        src = paths.REPO_ROOT / src  # config paths are relative to the project root
    if not src.exists():
        raise BadModelFileError(
            f"{src}: ICT-FaceKit not found (upstream: github.com/ICT-VGL/ICT-FaceKit, "
            "folder FaceXModel/; set config assets.ict_facekit)"
        )
    t0 = time.perf_counter()
    digest = _sha256(src)
    cache = ict_cache_path(src, digest)
    if use_cache and cache.is_file():
        arrays = _read_ict_cache(cache)
        if arrays is not None and str(arrays["source_sha256"]) == digest:
            if verbose:
                print(f"ICT-FaceKit from cache {cache} ({time.perf_counter() - t0:.2f} s)")
            return arrays
    try:
        arrays = parse_ict(src, progress=verbose)
    except BadModelFileError:
        raise
    except Exception as e:  # anything else a damaged source raises (json, unicode, ...)
        raise BadModelFileError(f"{src}: cannot parse ICT-FaceKit ({type(e).__name__}: {e})") from e
    arrays["source_sha256"] = np.array(digest)
    if use_cache:
        _write_ict_cache(cache, arrays)
    if verbose:
        print(f"ICT-FaceKit parsed from {src} ({time.perf_counter() - t0:.2f} s)")
    return arrays


#: Arrays every ICT cache file holds (see :func:`parse_ict`, plus the key ``source_sha256``).
_CACHE_KEYS = ("mean", "id_basis", "exp_basis", "triangles", "exp_names", "rigid", "fitting",
               "source_sha256")  # fmt: skip


def _read_ict_cache(cache: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ICT cache file, or ``None`` (with a warning naming it) when any
    part of it cannot be read: a damaged cache must never fail a job."""
    import warnings

    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = [k for k in _CACHE_KEYS if k not in arrays]
        if missing:
            raise KeyError(f"arrays {missing} missing")
        return arrays
    except Exception as e:  # EOFError, zipfile.BadZipFile, zlib.error, OSError, ValueError, ...
        warnings.warn(
            f"ICT-FaceKit cache {cache} is unreadable ({type(e).__name__}: {e}); "
            "parsing the source again and rewriting the cache",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _write_ict_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically; a failure (read-only or full disk) only warns."""
    import warnings

    try:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as e:
        warnings.warn(
            f"ICT-FaceKit cache {cache} could not be written ({e}); the next run parses again",
            RuntimeWarning,
            stacklevel=3,
        )
