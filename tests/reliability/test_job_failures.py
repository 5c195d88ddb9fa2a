"""How a job fails (issue 14, "what a hard probe found"): every failure leaves a message
that names what went wrong, in the job's log and on the console.

* a job that raises keeps its traceback in the log and on the console (``vox3d.joblog``);
* a damaged ICT-FaceKit cache is re-parsed, never a failed job (``vox3d.face.ict_facekit``);
* a full disk is a ``DiskFullError`` naming the file, not a SIGSEGV (``vox3d.io``);
* a ``meta_csv`` that is not a metadata table is refused naming the file, and
  ``meta_csv=null`` on the command line means no metadata (``vox3d.media.metadata``,
  ``vox3d.config``).

Each case adds a row to the session's outcome table (``conftest.py``).
"""

from __future__ import annotations

import errno
import faulthandler
import json
import logging
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from vox3d import io as vio
from vox3d.face import ict_facekit
from vox3d.joblog import job_log
from vox3d.media import manifest, metadata, split
from vox3d.paths import DATA_ROOT, REPO_ROOT
from vox3d.safeload import BadModelFileError

PY = sys.executable


# ----------------------------------------------------------------------------- 1. job logs


def _failing_step(n: int) -> None:
    raise RuntimeError(f"boom {n}")


def test_job_log_keeps_traceback_reraises_and_restores(tmp_path, outcomes):
    log = tmp_path / "logs" / "rule" / "job.log"
    root = logging.getLogger()
    before = (sys.stdout, sys.stderr, list(root.handlers), root.level, faulthandler.is_enabled())
    with pytest.raises(RuntimeError, match="boom 7"), job_log(log) as fh:
        print("said on stdout")
        print("said on stderr", file=sys.stderr)
        print("said on the handle", file=fh)
        logging.getLogger("vox3d.test").info("a logging record")
        _failing_step(7)
    after = (sys.stdout, sys.stderr, list(root.handlers), root.level, faulthandler.is_enabled())
    assert after == before
    text = log.read_text()
    for line in ("said on stdout", "said on stderr", "said on the handle", "INFO a logging record"):
        assert line in text
    assert "Traceback (most recent call last)" in text
    assert "in _failing_step" in text and text.rstrip().endswith("RuntimeError: boom 7")
    # a job that ends normally: streams restored, no traceback
    with job_log(tmp_path / "ok.log"):
        print("fine")
    assert (sys.stdout, sys.stderr) == before[:2]
    assert (tmp_path / "ok.log").read_text() == "fine\n"
    outcomes.append(("job_raises", "exception in a job", "job_log", "error: traceback in log"))


def _run_job(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run `body` inside ``job_log(<tmp>/job.log)`` in a fresh Python, as a Snakemake script
    runs; returns the process and the log's text."""
    log = tmp_path / "job.log"
    body = textwrap.indent(textwrap.dedent(body), "    ")
    code = f"from vox3d.joblog import job_log\nwith job_log({str(log)!r}):\n{body}\n"
    res = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    return res, log.read_text() if log.exists() else ""


def test_job_traceback_reaches_log_and_console(tmp_path, outcomes):
    res, text = _run_job(tmp_path, "print('working')\nraise ValueError('bad shard 3')")
    assert res.returncode == 1
    assert "working" in text and "ValueError: bad shard 3" in text and "Traceback" in text
    assert "ValueError: bad shard 3" in res.stderr  # the console (Snakemake prints this)
    outcomes.append(
        ("job_raises_console", "exception in a script", "job_log", "error: log + console")
    )


def test_job_crash_in_native_code_leaves_a_stack_in_the_log(tmp_path, outcomes):
    res, text = _run_job(tmp_path, "print('before')\nimport ctypes\nctypes.string_at(0)")
    assert res.returncode != 0
    assert "before" in text and "Segmentation fault" in text and "<string>" in text
    outcomes.append(("job_sigsegv", "SIGSEGV in a job", "job_log", "error: stack in log"))


def test_every_script_logs_through_job_log():
    scripts = sorted(p for p in (REPO_ROOT / "scripts").glob("*.py") if p.name != "_repo.py")
    assert len(scripts) >= 11
    for p in scripts:
        src = p.read_text()
        assert "job_log(smk.log[0])" in src, f"{p.name} does not log through vox3d.joblog"
        for bad in ("sys.stderr =", "sys.stdout =", "redirect_stderr", "basicConfig"):
            assert bad not in src, f"{p.name}: {bad} (use vox3d.joblog.job_log)"


# ----------------------------------------------------------------------------- 2. ICT cache


def _tiny_ict(d: Path) -> Path:
    """A 4-vertex FaceXModel folder: neutral tetrahedron, 1 identity, 1 expression."""
    d.mkdir(parents=True, exist_ok=True)
    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    faces = "f 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"

    def obj(v):
        return "".join(f"v {x} {y} {z}\n" for x, y, z in v) + faces

    (d / "generic_neutral_mesh.obj").write_text(obj(base))
    (d / "identity000.obj").write_text(obj(base * 1.1))
    (d / "jawOpen.obj").write_text(obj(base + [0, -0.2, 0]))
    (d / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen"]}))
    return d


def _damage(kind: str, cache: Path) -> None:
    data = cache.read_bytes()
    if kind == "zero_bytes":
        cache.write_bytes(b"")
    elif kind == "truncated":
        cache.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        cache.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "arrays_missing":
        with open(cache, "wb") as fh:
            np.savez(fh, mean=np.zeros((4, 3), np.float32))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero_bytes", "truncated", "garbage", "arrays_missing"])
def test_damaged_ict_cache_is_reparsed_and_rewritten(tmp_path, monkeypatch, kind, outcomes):
    monkeypatch.setenv("VOX3D_CACHE", str(tmp_path / "cache"))
    src = _tiny_ict(tmp_path / "FaceXModel")
    good = ict_facekit.load_ict_arrays(src)
    (cache,) = (tmp_path / "cache").glob("ict_facekit_*.npz")
    _damage(kind, cache)
    with pytest.warns(RuntimeWarning, match=re.escape(str(cache))):
        again = ict_facekit.load_ict_arrays(src)
    assert set(again) == set(good) and all(np.array_equal(again[k], good[k]) for k in good)
    # the cache was rewritten whole: the next load reads it without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = ict_facekit.load_ict_arrays(src)
    assert all(np.array_equal(third[k], good[k]) for k in good)
    assert not list((tmp_path / "cache").glob("*.part"))
    outcomes.append((f"ict_cache_{kind}", cache.name, "face_model", "resampled: re-parsed"))


def test_damaged_cache_and_broken_source_names_the_source(tmp_path, monkeypatch, outcomes):
    monkeypatch.setenv("VOX3D_CACHE", str(tmp_path / "cache"))
    src = _tiny_ict(tmp_path / "FaceXModel")
    (src / "vertex_indices.json").write_text("{not json")
    cache = ict_facekit.ict_cache_path(src, ict_facekit._sha256(src))
    cache.write_bytes(b"")
    with (
        pytest.warns(RuntimeWarning, match=re.escape(str(cache))),
        pytest.raises(BadModelFileError, match=re.escape(str(src))),
    ):
        ict_facekit.load_ict_arrays(src)
    outcomes.append(("ict_cache_and_source", "bad cache + bad json", "face_model", "error: source"))


# ----------------------------------------------------------------------------- 3. full disk


@pytest.fixture(scope="module")
def one_clip_shard(tmp_path_factory):
    """A one-video shard TSV of a real VoxCeleb2 clip, and its videos folder."""
    tmp = tmp_path_factory.mktemp("shard")
    clip = sorted((DATA_ROOT / "real" / "voxceleb").glob("*/*/*.mp4"))[0]
    videos = tmp / "videos"
    dest = videos / "id00001" / "yt" / "00001.mp4"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(clip.read_bytes())
    rows = manifest.build_manifest(videos, progress=False)
    names = manifest.write_manifest(rows, tmp / "manifest.tsv", tmp / "shards", 10)
    return tmp / "shards" / f"{names[0]}.tsv", videos


def _assert_disk_full(err: BaseException, target: Path) -> None:
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert f"no space left on device while writing {target}" in str(err)
    assert not target.exists()
    assert not list(target.parent.glob(f".{target.name}.*"))  # no temporary left


def test_extract_refuses_to_fill_the_disk(one_clip_shard, tmp_path, monkeypatch, outcomes):
    from vox3d.media.extract import extract_shard

    shard, videos = one_clip_shard
    out = tmp_path / "extract" / "shard-00000.h5"
    probed = []

    def nearly_full(path):
        probed.append(Path(path))
        return 5 << 20  # 5 MiB: less than the clip's frames need

    monkeypatch.setattr(vio, "free_bytes", nearly_full)
    with pytest.raises(vio.DiskFullError) as ei:
        extract_shard(shard, videos, out, progress=False)
    _assert_disk_full(ei.value, out)
    assert probed and probed[0] == out.parent
    # with room, the same shard extracts (the probe is what refused it)
    monkeypatch.setattr(vio, "free_bytes", lambda path: 1 << 40)
    assert extract_shard(shard, videos, out, progress=False)["extracted"] == 1
    outcomes.append(("disk_nearly_full", "free-space probe 5 MiB", "extract", "error: no space"))


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs mounted at ``tmp_path/full`` (needs root / CAP_SYS_ADMIN)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not permitted): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_atomic_write_on_a_full_filesystem(tiny_fs, outcomes):
    target = tiny_fs / "sub" / "table.tsv"
    with pytest.raises(vio.DiskFullError) as ei:
        vio.write_bytes_atomic(target, b"x" * (2 << 20))
    _assert_disk_full(ei.value, target)
    assert ei.value.__cause__ is not None and ei.value.__cause__.errno == errno.ENOSPC
    vio.write_text_atomic(target, "small\n")  # the space was given back
    assert target.read_text() == "small\n"
    outcomes.append(("disk_full_write", "1 MiB tmpfs, 2 MiB file", "io", "error: no space"))


def test_extract_on_a_full_filesystem(one_clip_shard, tiny_fs, outcomes):
    from vox3d.media.extract import extract_shard

    shard, videos = one_clip_shard
    out = tiny_fs / "shard-00000.h5"
    with pytest.raises(vio.DiskFullError) as ei:
        extract_shard(shard, videos, out, progress=False)
    _assert_disk_full(ei.value, out)
    outcomes.append(("disk_full_extract", "1 MiB tmpfs", "extract", "error: no space"))


def test_hdf5_write_hitting_enospc_is_named_in_the_log(tiny_fs, tmp_path, outcomes):
    # HDF5 itself meets the full disk (no free-space check first): the error names the
    # file and reaches the job's log.  Run apart: HDF5 2.0 may crash at exit after ENOSPC.
    target = tiny_fs / "data.h5"
    res, text = _run_job(
        tmp_path,
        f"""
        import numpy as np
        from vox3d.io import atomic_path, h5_new
        with atomic_path({str(target)!r}) as tmp, h5_new(tmp) as f:
            f.create_dataset("x", data=np.arange(1 << 19, dtype=np.float64))
        """,
    )
    assert res.returncode != 0
    assert f"DiskFullError: no space left on device while writing {target}" in text
    assert not target.exists()
    outcomes.append(("disk_full_hdf5", "1 MiB tmpfs, 4 MiB dataset", "io", "error: no space"))


# ----------------------------------------------------------------------------- 4. meta_csv

META_CASES = {
    "empty": (b"", "empty file"),
    "blank_lines": (b"\n\n  \n", "empty file"),
    "wrong_columns": (
        b"id\tname\tsex\nid1\tAnn\tf\n",
        "missing column(s) VoxCeleb1 ID, VGGFace1 ID, Gender, Set",
    ),
    "header_only_some": (b"VoxCeleb1 ID,VGGFace1 ID\nid1,Ann\n", "missing column(s) Gender, Set"),
    "binary_not_utf8": (bytes(range(256)) * 8, "not UTF-8 text"),
    "binary_nul": (b"VoxCeleb1 ID\x00\x00\x01\x02" * 50, "binary file"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_bad_meta_csv_is_refused_naming_the_file(case, tmp_path, outcomes):
    data, words = META_CASES[case]
    p = tmp_path / f"{case}.csv"
    p.write_bytes(data)
    # every caller goes through the one reader: manifest, split/train, figures
    for read in (metadata.read_meta, split.read_meta, manifest.read_meta):
        with pytest.raises(metadata.MetadataError, match=re.escape(words)) as ei:
            read(p)
        assert str(p) in str(ei.value) and isinstance(ei.value, ValueError)
    (tmp_path / "videos").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(p))):
        manifest.build_manifest(tmp_path / "videos", p, progress=False)
    outcomes.append((f"meta_{case}", p.name, "metadata", f"error: {words}"))


def test_missing_meta_csv_is_an_error_and_none_is_no_metadata(tmp_path, outcomes):
    with pytest.raises(
        metadata.MetadataError, match=re.escape(f"{tmp_path / 'nope.csv'}: no such")
    ):
        split.read_meta(tmp_path / "nope.csv")
    assert split.read_meta(None) == {}
    outcomes.append(("meta_missing", "nope.csv", "metadata", "error: no such file"))


def test_one_reader_for_every_layout(tmp_path):
    assert split.read_meta is metadata.read_meta
    real = metadata.read_meta(DATA_ROOT / "cmp" / "vox1_meta.csv")
    assert len(real) == 1251 and real["id10001"].nationality == "Ireland"
    as_rows = manifest.read_meta(DATA_ROOT / "cmp" / "vox1_meta.csv")
    assert {k: m.fields() for k, m in real.items()} == as_rows
    # columns found by name, in any order, comma or tab; one gender rule for everybody
    (tmp_path / "m.csv").write_text(
        "Set,Gender,VGGFace2 ID,VoxCeleb2 ID\ndev,Female,Ann_B,id1\ntest, male ,Bob,id2\n"
        "dev,x,Cy,id3\ndev,f,,\n"
    )
    m = metadata.read_meta(tmp_path / "m.csv")
    assert m == {
        "id1": metadata.IdentityMeta("id1", "Ann_B", "f", "", "dev"),
        "id2": metadata.IdentityMeta("id2", "Bob", "m", "", "test"),
        "id3": metadata.IdentityMeta("id3", "Cy", "", "", "dev"),
    }
    assert manifest.read_meta(tmp_path / "m.csv")["id1"]["gender"] == "f"
    # what write_meta writes (the VoxCeleb1 header, as the synthetic corpus) is read back
    rows = [metadata.IdentityMeta("id9", "Zoe_Q", "f", "UK", "dev")]
    metadata.write_meta(tmp_path / "w.tsv", rows)
    assert (tmp_path / "w.tsv").read_text().splitlines()[0].split("\t") == list(
        metadata.META_COLUMNS
    )
    assert metadata.read_meta(tmp_path / "w.tsv") == {"id9": rows[0]}


@pytest.mark.parametrize("key", ["meta_csv", "videos_dir"])
def test_null_on_the_command_line_means_null(key, outcomes):
    from snakemake.cli import parse_config

    from vox3d.config import load_config

    given = parse_config([f"{key}=null"])
    assert given == {key: "null"}  # what Snakemake hands over
    cfg = load_config(overrides=given)
    assert cfg[key] is None
    assert load_config(overrides=parse_config([f"{key}=~"]))[key] is None
    # a key that cannot be null keeps the text (a folder named "null")
    assert load_config(overrides=parse_config(["out_dir=null"]))["out_dir"] == "null"
    outcomes.append((f"config_{key}_null", f"--config {key}=null", "config", "resampled: null"))
