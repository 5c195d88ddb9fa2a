"""Identity split: no identity on both sides; A-E names rule; deterministic hash split."""

from __future__ import annotations

from vox3d.paths import DATA_ROOT
from vox3d.split import IdentityMeta, read_meta, read_split, split_identities, write_split


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
