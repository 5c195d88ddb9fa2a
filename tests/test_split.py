"""Identity split: no identity on both sides; A-E names rule; deterministic hash split."""

from __future__ import annotations

import pytest

from vox3d.media.split import IdentityMeta, read_meta, read_split, split_identities, write_split
from vox3d.paths import DATA_ROOT


def test_paper_split_on_real_vox1_meta():
    meta = read_meta(DATA_ROOT / "cmp" / "vox1_meta.csv")
    assert len(meta) == 1251
    ids = sorted(meta)
    train, val, how = split_identities(ids, meta)
    assert how == "names"
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(ids)
    assert all(meta[i].name[0].upper() in "ABCDE" for i in val)
    assert all(meta[i].name[0].upper() not in "ABCDE" for i in train)
    assert meta["id10001"].name == "A.J._Buckley" and "id10001" in val
    assert meta["id10001"].gender == "m"


def test_hash_split_without_names(tmp_path):
    ids = [f"spk{i:04d}" for i in range(500)]
    train, val, how = split_identities(ids, {}, val_fraction=0.2)
    assert how == "hash"
    assert not set(train) & set(val) and len(train) + len(val) == 500
    assert 70 < len(val) < 130  # ~ 20 %
    # deterministic and independent of input order
    assert split_identities(list(reversed(ids)), {}, val_fraction=0.2)[:2] == (train, val)
    # a subset keeps each identity's side
    sub_train, sub_val, _ = split_identities(ids[:100], {}, val_fraction=0.2)
    assert set(sub_val) == set(val) & set(ids[:100]) or len(sub_val) == 1
    write_split(tmp_path / "split.tsv", train, val)
    assert read_split(tmp_path / "split.tsv")[:2] == (train, val)


def test_partial_names_fall_back_to_hash_and_both_sides_nonempty():
    meta = {"a": IdentityMeta("a", "Fred", "m")}
    train, val, how = split_identities(["a", "b"], meta)
    assert how == "hash" and len(train) == 1 and len(val) == 1
    # all names F-Z: validation would be empty -> one identity is moved over
    meta = {i: IdentityMeta(i, "Zed" + i, "f") for i in "xyz"}
    train, val, how = split_identities("xyz", meta)
    assert how == "names" and len(val) == 1 and len(train) == 2


def test_meta_layouts_vox1_vox2_and_written_file(tmp_path):
    from vox3d.media.split import write_meta

    # VoxCeleb2's vox2_meta.csv has no nationality column: Set must not land in it
    (tmp_path / "vox2.csv").write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \nid06209 ,n000123 ,m ,test \n"
        "id09999 ,n000999 ,f ,dev \n"
    )
    m = read_meta(tmp_path / "vox2.csv")
    assert m["id06209"] == IdentityMeta("id06209", "n000123", "m", "", "test")
    assert m["id09999"].gender == "f" and m["id09999"].nationality == ""
    # what write_meta writes is the VoxCeleb1 layout, read back the same (names optional)
    rows = [IdentityMeta("pcavs00010", "", ""), IdentityMeta("id06209", "", "m", "", "test")]
    write_meta(tmp_path / "meta.tsv", rows)
    lines = (tmp_path / "meta.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set"]
    assert lines[1].startswith("id06209\t")  # sorted by identity
    back = read_meta(tmp_path / "meta.tsv")
    assert back == {r.identity: r for r in rows}
    # the manifest stage reads the same file to the same genders
    from vox3d.media.manifest import read_meta as manifest_meta

    assert manifest_meta(tmp_path / "meta.tsv")["id06209"]["gender"] == "m"
    with pytest.raises(ValueError, match="tab"):
        write_meta(tmp_path / "bad.tsv", [IdentityMeta("a\tb", "", "")])


def test_split_errors_are_clear():
    from vox3d.media.split import check_split

    with pytest.raises(ValueError, match="cannot split 1 identity"):
        split_identities(["only"], {})
    meta = {"a": IdentityMeta("a", "", "m"), "b": IdentityMeta("b", "Bo", "m")}
    with pytest.raises(ValueError, match="needs a name .* 1 of 2 have none.*train.split: hash"):
        split_identities(["a", "b"], meta, method="names")
    with pytest.raises(ValueError, match="validation split is empty"):
        check_split(["a", "b"], [])
    with pytest.raises(ValueError, match="training split is empty"):
        check_split([], ["a"])
    with pytest.raises(ValueError, match="both sides"):
        check_split(["a", "b"], ["b"])


def test_real_clip_identities_hash_split_holds_out_two():
    # the 9 identities of real/voxceleb with config/real_bfm.yaml's val_fraction 0.35
    ids = ["id06209", "id06811", "id06816", "id07414"] + [
        f"pcavs{n:05d}" for n in (10, 15, 86, 373, 473)
    ]
    train, val, how = split_identities(ids, {}, "auto", 0.35)
    assert how == "hash" and val == ["id06209", "id07414"] and len(train) == 7
    # the default 0.2 keeps exactly one, never none
    assert split_identities(ids, {}, "hash", 0.2)[1] == ["id06209"]
    assert len(split_identities(ids, {}, "hash", 0.01)[1]) == 1
