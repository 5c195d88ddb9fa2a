"""Builders of hostile inputs for the reliability suite (issue 10).

Every builder writes into a folder the caller owns (``tmp_path``) and returns the path it
wrote.  Media are made from the project's real shared clips (``vox3d.paths.DATA_ROOT /
"real"``) with the ``ffmpeg`` program (argument lists, never a shell); model files and
pickles with torch / pickle in this process.  Nothing here is ever loaded unsafely: the
point is to hand these files to vox3d's loaders and watch them refuse.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

from vox3d.paths import DATA_ROOT

REAL = DATA_ROOT / "real"
#: A real VoxCeleb2 clip (224x224 25 fps H.264, AAC 16 kHz mono, 4.4 s, one frontal face).
CLIP = REAL / "voxceleb" / "id06209" / "pcavs" / "00105.mp4"
#: A second real clip of another person (for two faces side by side).
CLIP2 = REAL / "voxceleb" / "id06811" / "pcavs" / "00216.mp4"


def ffmpeg(*args: str) -> None:
    """Run ``ffmpeg -y -v error ARGS``; raise with its stderr on failure."""
    cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-2000:]}")


def _dest(root: Path, rel: str) -> Path:
    out = root / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


# ------------------------------------------------------------------------------- videos


def copy_real(src: Path):
    """A builder that copies a real shared file to ``rel``."""

    def build(root: Path, rel: str) -> Path:
        out = _dest(root, rel)
        shutil.copyfile(src, out)
        return out

    return build


def reencode(*vf_af: str, seconds: float = 2.0, src: Path = CLIP):
    """A builder that re-encodes ``src`` (first `seconds`) with extra ffmpeg output args."""

    def build(root: Path, rel: str) -> Path:
        out = _dest(root, rel)
        ffmpeg(
            "-i", str(src), "-t", f"{seconds}", *vf_af,
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", str(out),
        )  # fmt: skip
        return out

    return build


def two_faces(root: Path, rel: str) -> Path:
    """Two real people side by side (448x224), 2 s, audio of the first."""
    out = _dest(root, rel)
    ffmpeg(
        "-t", "2", "-i", str(CLIP), "-t", "2", "-i", str(CLIP2),
        "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]", "-map", "[v]", "-map", "0:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        str(out),
    )  # fmt: skip
    return out


def huge(root: Path, rel: str) -> Path:
    """The real clip scaled to 4000x3000 (12 Mpixel frames), 1.5 s at 25 fps."""
    return reencode("-vf", "scale=4000:3000", seconds=1.5)(root, rel)


def variable_frame_rate(root: Path, rel: str) -> Path:
    """Irregular frame spacing: keep every 3rd frame, plus a burst of every frame in
    frames 30-45, with the source timestamps (``-vsync vfr``)."""
    return reencode(
        "-vf", r"select='not(mod(n\,3))+between(n\,30\,45)'", "-vsync", "vfr", seconds=3.0
    )(root, rel)  # fmt: skip


def truncate(src: Path, fraction: float = 0.5):
    """A builder writing the first `fraction` of `src`'s bytes."""

    def build(root: Path, rel: str) -> Path:
        out = _dest(root, rel)
        data = src.read_bytes()
        out.write_bytes(data[: int(len(data) * fraction)])
        return out

    return build


def write_bytes(data: bytes):
    def build(root: Path, rel: str) -> Path:
        out = _dest(root, rel)
        out.write_bytes(data)
        return out

    return build


# ------------------------------------------------------------------------------- models


class RunsCode:
    """Pickles to a call of ``open(marker, "w")``: unpickling it unsafely creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_pickle(path: Path, marker: Path) -> Path:
    """A pickle that, if loaded with ``pickle.load``, creates `marker` (a file)."""
    path.write_bytes(pickle.dumps({"mean": RunsCode(marker), "std": [1.0]}))
    return path


def code_torch(path: Path, marker: Path) -> Path:
    """A ``torch.save`` checkpoint that, if loaded with ``weights_only=False``, creates
    `marker`."""
    import torch

    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": RunsCode(marker)}, path)
    return path


def truncated_copy(src: Path, path: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def edited_state_dict(src: Path, path: Path, edit) -> Path:
    """``src``'s state dict (loaded safely) passed through ``edit(state) -> state``, saved."""
    import torch

    from vox3d.safeload import load_torch

    obj = load_torch(src)
    state = dict(obj.get("state_dict", obj))
    torch.save(edit(state), path)
    return path


def torch_save(obj, path: Path) -> Path:
    import torch

    torch.save(obj, path)
    return path
