"""Shared pytest fixtures: where the third-party test data lives, and the real clips in it.

The data (``../shared/data`` beside the repository, or ``$VOX3D_DATA``) is required: a
missing folder fails the tests that need it with a message saying where it should be.
A test needing particular files says so with :func:`require` (in its body or a fixture)
or the ``shared_data(path, ...)`` mark; either fails, never skips, naming the missing file.
Stage-specific fixtures live in the stages' own test files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vox3d.paths import DATA_ROOT, TDDFA_DIR, TDDFA_EXAMPLES

#: The 10 real VoxCeleb2 clips of real/voxceleb (see real/MANIFEST.md).
N_REAL_CLIPS = 10


def require(*paths: str | os.PathLike) -> None:
    """Fail the calling test (never skip it) when a shared data file or folder is missing.

    The message names the first missing path and says where the shared data should be.
    """
    for path in paths:
        if not Path(path).exists():
            pytest.fail(
                f"missing shared data: {path} (the tests need the project's shared data "
                f"folder at {DATA_ROOT}: ../shared/data beside the repository, or set "
                "VOX3D_DATA to its location)",
                pytrace=False,
            )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared_data(*paths): the test needs these shared data files; fails when one is missing",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply :func:`require` to the paths of every ``shared_data`` mark of `item`."""
    for mark in item.iter_markers(name="shared_data"):
        require(*mark.args)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``vox3d.paths.DATA_ROOT``; fails (never skips) when it is missing."""
    if not (DATA_ROOT / "real" / "MANIFEST.md").is_file():
        pytest.fail(
            f"test data not found at {DATA_ROOT}: the tests need the project's shared data "
            "folder (real/, 3ddfa_v2/, cmp/, ict-facekit/) at ../shared/data beside the "
            "repository, or set VOX3D_DATA to its location",
            pytrace=False,
        )
    return DATA_ROOT


@pytest.fixture(scope="session")
def real_clips(data_root: Path) -> list[Path]:
    """The 10 real VoxCeleb2 mp4s, ``real/voxceleb/<id>/<clip>/<utt>.mp4``, sorted."""
    clips = sorted((data_root / "real" / "voxceleb").glob("*/*/*.mp4"))
    assert len(clips) == N_REAL_CLIPS, f"expected {N_REAL_CLIPS} clips, found {len(clips)}"
    return clips


@pytest.fixture(scope="session")
def other_clips(data_root: Path) -> list[Path]:
    """The 7 clips of real/other (WebM/VP9, MPEG-PS, AVI/MJPEG, GRID), sorted."""
    return sorted(p for p in (data_root / "real" / "other").glob("*/*/*") if p.is_file())


@pytest.fixture(scope="session")
def bad_files(data_root: Path) -> dict[str, Path]:
    """The broken inputs of real/bad by stem: empty, not_a_video, truncated, no_audio, ..."""
    files = {p.stem: p for p in sorted((data_root / "real" / "bad").iterdir()) if p.is_file()}
    assert {"empty", "not_a_video", "truncated", "no_audio", "no_video", "too_short"} <= set(files)
    return files


@pytest.fixture(scope="session")
def ref():
    """``3ddfa_v2/reference_mb05.npz``: outputs of the original 3DDFA-V2 code (see the data README)."""
    return np.load(TDDFA_DIR / "reference_mb05.npz")


@pytest.fixture(scope="session")
def images():
    """The 3DDFA-V2 example photographs as read by the original (cv2.imread, BGR), by name."""
    import cv2

    return {n: cv2.imread(str(TDDFA_DIR / "examples" / f"{n}.jpg")) for n in TDDFA_EXAMPLES}
