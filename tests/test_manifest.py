"""Manifest: finding videos, layout parsing, probing real clips, metadata join, shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vox3d.io import read_tsv
from vox3d.media.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    find_videos,
    list_shards,
    parse_layout,
    read_meta,
    split_shards,
    write_manifest,
)
from vox3d.media.video_probe import probe, probe_ffprobe


@pytest.fixture(scope="module")
def tree(tmp_path_factory, real_clips, other_clips, bad_files):
    root = tmp_path_factory.mktemp("videos")
    layout = {
        "id10001/yt1/00001.mp4": real_clips[0],  # in vox1_meta.csv: A.J._Buckley
        "id10002/yt 2/ütt é.MP4": real_clips[1],  # odd name, upper-case extension
        "grid/s2/swwp2s.mpg": other_clips[0],
        "depth2/only.webm": [p for p in other_clips if p.suffix == ".webm"][0],
        "deep/a/b/c.avi": [p for p in other_clips if p.suffix == ".avi"][0],
        "top.mp4": real_clips[2],
        "top_empty.mp4": bad_files["empty"],
        "bad/x/empty.mp4": bad_files["empty"],
        "bad/x/not_a_video.mp4": bad_files["not_a_video"],
        "bad/x/truncated.mp4": bad_files["truncated"],
        "id10001/yt1/notes.txt": bad_files["not_a_video"],  # not a video extension
        ".hidden/x/y.mp4": real_clips[0],  # hidden folder
    }
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    return root


def test_find_videos(tree):
    found, bad = find_videos(tree)
    assert bad == []
    assert found == sorted(found)
    assert "id10002/yt 2/ütt é.MP4" in found
    assert "id10001/yt1/notes.txt" not in found and not any(p.startswith(".") for p in found)
    assert len(found) == 10


def test_parse_layout():
    assert parse_layout("id1/yt/u.mp4") == ("id1", "yt", "u")
    assert parse_layout("id1/u.mp4") == ("id1", "", "u")
    assert parse_layout("id1/a/b/u.mp4") == ("id1", "a/b", "u")
    assert parse_layout("u.mp4") == ("", "", "u")


def test_read_real_vox1_meta(data_root):
    meta = read_meta(data_root / "cmp" / "vox1_meta.csv")
    assert len(meta) > 1000
    assert meta["id10001"] == {
        "name": "A.J._Buckley",
        "gender": "m",
        "nationality": "Ireland",
        "set": "dev",
    }


def test_build_manifest(tree, data_root):
    rows = build_manifest(tree, data_root / "cmp" / "vox1_meta.csv", progress=False)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    by = {r["path"]: r for r in rows}
    a = by["id10001/yt1/00001.mp4"]
    assert (a["identity"], a["youtube_id"], a["utterance"]) == ("id10001", "yt1", "00001")
    assert (a["width"], a["height"], a["fps"], a["vcodec"]) == (224, 224, 25.0, "h264")
    assert (a["acodec"], a["sample_rate"], a["channels"]) == ("aac", 16000, 1)
    assert (a["gender"], a["nationality"], a["set"]) == ("m", "Ireland", "dev")
    assert a["duration_s"] > 4 and a["has_video"] == 1 and a["has_audio"] == 1
    assert a["probe_error"] == ""
    g = by["grid/s2/swwp2s.mpg"]
    assert (g["width"], g["height"], g["acodec"], g["sample_rate"], g["channels"]) == (
        360,
        288,
        "mp2",
        44100,
        2,
    )
    assert g["gender"] == ""  # not in the metadata
    assert by["depth2/only.webm"]["identity"] == "depth2"
    assert by["deep/a/b/c.avi"]["youtube_id"] == "a/b"
    assert (by["top.mp4"]["identity"], by["top.mp4"]["probe_error"]) == ("", "")
    assert by["top_empty.mp4"]["probe_error"] == "empty file (0 bytes)"  # its own reason
    assert by["bad/x/empty.mp4"]["probe_error"] == "empty file (0 bytes)"
    assert "not a video" in by["bad/x/not_a_video.mp4"]["probe_error"]
    assert "truncated" in by["bad/x/truncated.mp4"]["probe_error"]


def test_probers_agree(real_clips, other_clips):
    for p in [real_clips[0], *other_clips]:
        a, b = probe(p), probe_ffprobe(p)
        for k in ("has_video", "has_audio", "width", "height", "vcodec", "acodec"):
            assert getattr(a, k) == getattr(b, k), (p, k)
        assert (a.sample_rate, a.channels, a.fps) == (b.sample_rate, b.channels, b.fps)
        assert abs(a.duration_s - b.duration_s) < 0.1  # libav versions differ (edit lists)


def test_shards_deterministic(tree, tmp_path):
    rows = build_manifest(tree, progress=False)
    names = write_manifest(rows, tmp_path / "a" / "manifest.tsv", tmp_path / "a" / "shards", 4)
    assert names == ["shard-00000", "shard-00001", "shard-00002"]
    assert list_shards(tmp_path / "a" / "shards") == names
    back = [r for n in names for r in read_tsv(tmp_path / "a" / "shards" / f"{n}.tsv")]
    assert [r["path"] for r in back] == [r["path"] for r in rows]
    man = read_tsv(tmp_path / "a" / "manifest.tsv")
    assert list(man[0]) == list(MANIFEST_COLUMNS) and len(man) == len(rows)
    # same input -> same bytes (probing again)
    write_manifest(
        build_manifest(tree, progress=False),
        tmp_path / "b" / "manifest.tsv",
        tmp_path / "b" / "shards",
        4,
    )
    for rel in ["manifest.tsv"] + [f"shards/{n}.tsv" for n in names]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # rewriting replaces the folder: no stale shard survives a smaller split
    write_manifest(rows, tmp_path / "a" / "manifest.tsv", tmp_path / "a" / "shards", 100)
    assert list_shards(tmp_path / "a" / "shards") == ["shard-00000"]
    assert not list(tmp_path.glob("a/.shards.*"))


def test_split_shards():
    rows = [{"path": str(i)} for i in range(10)]
    assert [len(s) for s in split_shards(rows, 4)] == [4, 4, 2]
    assert split_shards([], 4) == []
    with pytest.raises(ValueError):
        split_shards(rows, 0)


def test_missing_videos_dir(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="videos_dir"):
        find_videos(tmp_path / "nope")
