"""The manifest: one probe of every video under ``videos_dir``, and its split into shards.

Layout of ``videos_dir`` (VoxCeleb): ``<identity>/<youtube-id>/<utterance>.<ext>`` with
``ext`` one of :data:`vox3d.media.video_probe.VIDEO_EXTENSIONS` (any case). Names may hold spaces and
any unicode. Files at another depth are still taken, so that nothing is dropped silently:

* ``<identity>/<utterance>.<ext>`` (depth 2): ``youtube_id`` is empty;
* deeper files: ``identity`` is the first folder, ``youtube_id`` the folders between it and
  the file, joined by ``/``;
* files directly in ``videos_dir`` have no identity: they are probed and listed with an
  empty ``identity``; the extract stage rejects them (a broken file with its own reason,
  else "not in an identity folder");
* other files (any other extension, hidden files and folders starting with ``.``) are
  ignored; a name holding a tab or a line break gets a row with its path escaped
  (:func:`escape_path`) and :data:`BAD_NAME` as ``probe_error`` (it is not probed), which
  the extract stage turns into a reject.

Output: ``manifest.tsv`` (columns :data:`MANIFEST_COLUMNS`, sorted by ``path``, paths
relative to ``videos_dir`` with ``/``) and ``shards/shard-NNNNN.tsv``: consecutive runs of
``shard_size`` rows of the sorted manifest, same columns. The same files in, the same
bytes out.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from vox3d.io import read_tsv, write_tsv
from vox3d.media.metadata import read_meta as read_identity_meta
from vox3d.media.video_probe import VIDEO_EXTENSIONS, ProbeInfo, probe, probe_ffprobe

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "path",
    "identity",
    "youtube_id",
    "utterance",
    "size_bytes",
    "duration_s",
    "has_video",
    "has_audio",
    "fps",
    "width",
    "height",
    "vcodec",
    "acodec",
    "sample_rate",
    "channels",
    "name",
    "gender",
    "nationality",
    "set",
    "probe_error",
)
#: Columns joined from ``meta_csv`` by identity.
META_COLUMNS = ("name", "gender", "nationality", "set")
SHARD_PREFIX = "shard-"
NO_IDENTITY = "not in an identity folder: expected <identity>/<youtube-id>/<utterance>.<ext>"
#: ``probe_error`` of a file whose name holds a tab or a line break (not probed).
BAD_NAME = (
    "bad file name: it holds a tab or a line break, which a TSV cannot hold "
    r"(the path is written with \t, \n, \r and \\ escapes); rename the file"
)
PROBERS: dict[str, Callable[[str | os.PathLike], ProbeInfo]] = {
    "pyav": probe,
    "ffprobe": probe_ffprobe,
}


def shard_name(i: int) -> str:
    """``shard-00000`` for ``i = 0``."""
    return f"{SHARD_PREFIX}{i:05d}"


def find_videos(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of the videos under `root` (sorted), and of names it cannot list.

    Symbolic links are followed, but every real folder and every real file is taken once,
    known by ``(st_dev, st_ino)``: folders are walked in sorted order of their paths and a
    folder already walked (a link loop, or a second link to one folder) is skipped; of
    several paths to one file (links, hard links) the first in sorted order is kept. Each
    skip is logged as a warning naming the path skipped and the path kept. A link that is
    the only path to its file is taken; a broken link is listed (its probe says why).
    """
    import heapq

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"videos_dir {root}: not a folder")
    seen_dirs: dict[tuple[int, int], str] = {}
    heap = [""]  # folders to walk, relative to root; popped in sorted order
    cands: list[tuple[str, tuple[int, int] | None]] = []
    while heap:
        rel_dir = heapq.heappop(heap)
        here = root / rel_dir if rel_dir else root
        try:
            st = os.stat(here)
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                log.warning(
                    "skipped folder %r: the same folder as %r (a symbolic link loop or a "
                    "second link to it)",
                    rel_dir,
                    seen_dirs[key] or ".",
                )
                continue
            seen_dirs[key] = rel_dir
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            log.warning("skipped folder %r: cannot be listed (%s)", rel_dir or ".", e)
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                is_dir = e.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                heapq.heappush(heap, rel)
            elif e.name.lower().endswith(VIDEO_EXTENSIONS):
                try:
                    fst = e.stat()  # follows links
                    cands.append((rel, (fst.st_dev, fst.st_ino)))
                except OSError:  # a broken link or a link loop: listed, the probe says why
                    cands.append((rel, None))
    found, bad = [], []
    seen_files: dict[tuple[int, int], str] = {}
    for rel, key in sorted(cands, key=lambda c: c[0]):
        if key is not None:
            if key in seen_files:
                log.warning(
                    "skipped %r: the same file as %r (another path to it through a link)",
                    rel,
                    seen_files[key],
                )
                continue
            seen_files[key] = rel
        (bad if ("\t" in rel or "\n" in rel or "\r" in rel) else found).append(rel)
    return found, bad


def escape_path(rel: str) -> str:
    r"""`rel` with backslash, tab, newline and carriage return written as ``\\ \t \n \r``."""
    return rel.translate({92: "\\\\", 9: "\\t", 10: "\\n", 13: "\\r"})


def parse_layout(rel: str) -> tuple[str, str, str]:
    """``<id>/<yt>/<utt>.<ext>`` -> (identity, youtube_id, utterance); see module docstring."""
    parts = PurePosixPath(rel).parts
    utterance = PurePosixPath(rel).stem
    if len(parts) == 1:
        return "", "", utterance
    return parts[0], "/".join(parts[1:-1]), utterance


def read_meta(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """VoxCeleb-style metadata -> ``{identity: {name, gender, nationality, set}}``.

    Read by :func:`vox3d.media.metadata.read_meta` (the one reader: format, gender rule and the
    :class:`~vox3d.media.metadata.MetadataError` for a file that is not such a table)."""
    return {i: m.fields() for i, m in read_identity_meta(path).items()}


def build_manifest(
    videos_dir: str | os.PathLike,
    meta_csv: str | os.PathLike | None = None,
    prober: str = "pyav",
    threads: int = 1,
    progress: bool = True,
) -> list[dict[str, object]]:
    """Probe every video under `videos_dir` once; rows sorted by path (module docstring)."""
    from tqdm import tqdm

    root = Path(videos_dir)
    rels, bad = find_videos(root)
    for b in bad:
        log.warning("%r: a tab or line break in the name; listed escaped, to be rejected", b)
    meta = read_meta(meta_csv) if meta_csv else {}
    probe_fn = PROBERS[prober]

    def one(rel: str) -> dict[str, object]:
        identity, yt, utt = parse_layout(rel)
        row: dict[str, object] = {"path": rel, "identity": identity, "youtube_id": yt}
        row["utterance"] = utt
        info = probe_fn(root / rel)
        row.update(info.as_row())
        row.update(meta.get(identity, {k: "" for k in META_COLUMNS}))
        return row

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        it = pool.map(one, rels)
        rows = list(tqdm(it, total=len(rels), desc="probe", unit="video", disable=not progress))
    for b in bad:  # not probed: the name alone rejects it
        identity, yt, utt = parse_layout(escape_path(b))
        row = {"path": escape_path(b), "identity": identity, "youtube_id": yt, "utterance": utt}
        row.update(ProbeInfo(error=BAD_NAME, error_code="bad_layout").as_row())
        rows.append({**row, **meta.get(identity, {k: "" for k in META_COLUMNS})})
    rows.sort(key=lambda r: str(r["path"]))
    return rows


def split_shards(rows: list[dict[str, object]], shard_size: int) -> list[list[dict[str, object]]]:
    """Consecutive runs of `shard_size` rows (the last may be shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]


def write_manifest(
    rows: list[dict[str, object]],
    manifest_tsv: str | os.PathLike,
    shards_dir: str | os.PathLike,
    shard_size: int,
) -> list[str]:
    """Write the shards folder (atomically, as a whole) and then ``manifest.tsv``.

    Returns the shard names.
    """
    shards_dir = Path(shards_dir)
    shards_dir.parent.mkdir(parents=True, exist_ok=True)
    # a killed earlier run may have left its temporary folder: only one job writes here
    for stale in shards_dir.parent.glob(f".{shards_dir.name}.*.part"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{shards_dir.name}.", suffix=".part", dir=shards_dir.parent)
    )
    names = []
    try:
        for i, chunk in enumerate(split_shards(rows, shard_size)):
            names.append(shard_name(i))
            write_tsv(tmp / f"{names[-1]}.tsv", chunk, MANIFEST_COLUMNS)
        if shards_dir.exists():
            shutil.rmtree(shards_dir)
        os.replace(tmp, shards_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_tsv(manifest_tsv, rows, MANIFEST_COLUMNS)
    return names


def list_shards(shards_dir: str | os.PathLike) -> list[str]:
    """Shard names (``shard-NNNNN``) found in `shards_dir`, sorted."""
    return sorted(
        p.name[: -len(".tsv")]
        for p in Path(shards_dir).iterdir()
        if p.name.startswith(SHARD_PREFIX) and p.name.endswith(".tsv")
    )


def read_shard(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a shard (or manifest) TSV as strings."""
    return read_tsv(path)


def cli(argv: list[str]) -> int:
    """``vox3d manifest VIDEOS_DIR --out-dir OUT [--meta-csv CSV] [--shard-size N]``."""
    ap = argparse.ArgumentParser(prog="vox3d manifest", description=__doc__.splitlines()[0])
    ap.add_argument("videos_dir")
    ap.add_argument("--out-dir", required=True, help="writes OUT/manifest.tsv and OUT/shards/")
    ap.add_argument("--meta-csv", default=None)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--prober", choices=sorted(PROBERS), default="pyav")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    rows = build_manifest(a.videos_dir, a.meta_csv, a.prober, a.threads)
    out = Path(a.out_dir)
    names = write_manifest(rows, out / "manifest.tsv", out / "shards", a.shard_size)
    n_err = sum(1 for r in rows if r["probe_error"])
    print(f"{len(rows)} videos ({n_err} with probe errors) in {len(names)} shards -> {out}")
    return 0
