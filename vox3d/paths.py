"""Where third-party assets live.  Every path here is a default that config or a CLI flag
overrides; the upstream location of each asset is documented next to it.

`VOX3D_DATA` (environment) points at a folder laid out like the project's
`../shared/data/`; by default that folder beside the repository checkout is used.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The package's own data files (`vox3d/data/`: the committed ICT regressor, measured
#: throughputs, the MediaPipe correspondence), shipped with the package.
PACKAGE_DATA = Path(__file__).resolve().parent / "data"
DATA_ROOT = Path(os.environ.get("VOX3D_DATA", REPO_ROOT.parent / "shared" / "data"))

#: ICT-FaceKit "Face Model Light" archive or FaceXModel/ folder.
#: Upstream: github.com/ICT-VGL/ICT-FaceKit (MIT), folder FaceXModel/.
ICT_FACEKIT = DATA_ROOT / "ict-facekit" / "ICT-FaceKit.tar.xz"
#: 3DDFA-V2 assets.  Upstream: github.com/cleardusk/3DDFA_V2 (MIT):
#: weights/mb05_120x120.pth, configs/param_mean_std_62d_120x120.pkl,
#: FaceBoxes/weights/FaceBoxesProd.pth, configs/tri.pkl; bfm_noneck_v3.pkl from the
#: same repository's configs/ (BFM academic licence; not shipped).
TDDFA_DIR = DATA_ROOT / "3ddfa_v2"
MB05_WEIGHTS = TDDFA_DIR / "mb05_120x120.pth"
PARAM_MEAN_STD = TDDFA_DIR / "param_mean_std_62d_120x120.pkl"
FACEBOXES_WEIGHTS = TDDFA_DIR / "FaceBoxesProd.pth"
BFM_TRI = TDDFA_DIR / "tri.pkl"
#: The upstream demo photographs ``examples/<name>.jpg`` that ``reference_mb05.npz`` covers, in
#: the order of its ``crops_*`` arrays (the first face of each).
TDDFA_EXAMPLES = ("emma", "trump_hillary", "JianzhuGuo")
#: Cross-Modal Perceptionist assets.  Upstream: github.com/choyingw/Cross-Modal-Perceptionist.
CMP_DIR = DATA_ROOT / "cmp"


def cache_dir() -> Path:
    """Writable cache folder (`VOX3D_CACHE`, else `~/.cache/vox3d`)."""
    d = Path(os.environ.get("VOX3D_CACHE", Path.home() / ".cache" / "vox3d"))
    d.mkdir(parents=True, exist_ok=True)
    return d
