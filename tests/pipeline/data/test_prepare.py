"""Leak-free data preparation on small built folders and on the shared Br35H set."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import prepare
from pipeline.data.near_duplicates import (
    MAX_DISTANCE,
    distances,
    fingerprint,
    fingerprint_all,
    hash_arrays,
    near_pairs,
)
from pipeline.data.prepare import SPLITS, PrepareError, check_split, parse_split, prepare_data
from tests.pipeline.folders import build_source, scan_like


def read_manifest(dest: Path) -> list[dict]:
    with open(dest / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def families(tmp_path: Path) -> dict[str, list[str]]:
    return build_source(tmp_path / "src", {"yes": 24, "no": 20}, variants=4)


def test_builder_makes_near_copies_close_and_others_far(tmp_path, families):
    """The folders the other tests rely on really hold near copies within the limit."""
    rows = sorted((m, base) for base, members in families.items() for m in members)
    prints = fingerprint_all([tmp_path / "src" / m for m, _ in rows])
    d = distances(*hash_arrays(prints))
    same = np.array([[a == b for _, b in rows] for _, a in rows])
    assert d[same].max() <= MAX_DISTANCE
    assert d[~same].min() > MAX_DISTANCE


def test_near_duplicates_share_one_group_and_one_split(tmp_path, families):
    summary = prepare_data(tmp_path / "src", tmp_path / "dest", seed=1)
    rows = {row["path"]: row for row in read_manifest(tmp_path / "dest")}
    assert len(rows) == sum(len(m) for m in families.values()) == summary["images"]
    for members in families.values():
        assert len({rows[m]["group"] for m in members}) == 1, members
        assert len({rows[m]["split"] for m in members}) == 1, members
    assert summary["groups"] == len(families)
    assert summary["near_duplicate_groups"] == sum(1 for m in families.values() if len(m) > 1)


def test_exact_copies_are_counted_and_grouped(tmp_path, families):
    src = tmp_path / "src"
    copies = [m for members in families.values() for m in members if m.endswith("_copy.png")]
    summary = prepare_data(src, tmp_path / "dest")
    assert copies and summary["exact_duplicates"] == len(copies)


def test_files_are_placed_per_split_and_class_as_hard_links(tmp_path, families):
    prepare_data(tmp_path / "src", tmp_path / "dest")
    for row in read_manifest(tmp_path / "dest"):
        name = row["path"].split("/", 1)[1]
        placed = tmp_path / "dest" / row["split"] / row["class"] / name
        assert placed.read_bytes() == (tmp_path / "src" / row["path"]).read_bytes()
        assert placed.stat().st_ino == (tmp_path / "src" / row["path"]).stat().st_ino
    placed_count = sum(1 for p in (tmp_path / "dest").glob("*/*/*") if p.is_file())
    assert placed_count == len(read_manifest(tmp_path / "dest"))


def test_copies_where_hard_links_fail(tmp_path, families, monkeypatch):
    """Across filesystems os.link fails with EXDEV; the files are copied instead."""
    def cross_device(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(prepare.os, "link", cross_device)
    summary = prepare_data(tmp_path / "src", tmp_path / "dest")
    assert summary["linked"] == 0 and summary["copied"] == summary["images"]
    row = read_manifest(tmp_path / "dest")[0]
    placed = tmp_path / "dest" / row["split"] / row["class"] / row["path"].split("/", 1)[1]
    assert placed.stat().st_nlink == 1
    assert placed.read_bytes() == (tmp_path / "src" / row["path"]).read_bytes()


def test_same_seed_gives_byte_identical_outputs(tmp_path, families):
    prepare_data(tmp_path / "src", tmp_path / "a", seed=7)
    prepare_data(tmp_path / "src", tmp_path / "b", seed=7)
    prepare_data(tmp_path / "src", tmp_path / "c", seed=8)
    for name in ("manifest.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "manifest.csv").read_bytes() != (tmp_path / "c" / "manifest.csv").read_bytes()


def test_manifest_columns_and_hashes(tmp_path, families):
    prepare_data(tmp_path / "src", tmp_path / "dest")
    rows = read_manifest(tmp_path / "dest")
    assert list(rows[0]) == ["path", "class", "sha256", "perceptual_hash", "group", "split"]
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    row = rows[0]
    print_ = fingerprint(tmp_path / "src" / row["path"])
    assert row["sha256"] == print_.sha256 and row["perceptual_hash"] == print_.dhash.hex()
    assert re.fullmatch(r"[0-9a-f]{64}", row["perceptual_hash"])


@pytest.mark.parametrize("proportions", [(70, 20, 10), (50, 25, 25), (80, 20, 0)])
def test_split_proportions_and_class_balance_follow_the_request(tmp_path, proportions):
    build_source(tmp_path / "src", {"yes": 90, "no": 60}, variants=2)
    summary = prepare_data(tmp_path / "src", tmp_path / "dest", proportions, seed=3)
    total = summary["images"]
    source_yes = summary["classes"]["yes"] / total
    for name, wanted in zip(SPLITS, proportions):
        split = summary["splits"][name]
        assert abs(split["images"] / total - wanted / 100) < 0.03, (name, split)
        if wanted:
            assert abs(split["yes_share"] - source_yes) < 0.06, (name, split)
        else:
            assert split["images"] == 0 and split["yes_share"] is None


def test_unlabelled_and_other_entries_are_left_out_and_reported(tmp_path):
    src = tmp_path / "src"
    build_source(src, {"yes": 4, "no": 4}, variants=0, folder_names={"yes": "Yes", "no": "no"})
    (src / "PRED").mkdir()
    for k in range(3):
        scan_like(100 + k).save(src / "PRED" / f"pred{k}.png")
    (src / "notes.txt").write_text("scanned 2020")
    (src / "Yes" / "readme.txt").write_text("not an image")
    summary = prepare_data(src, tmp_path / "dest")
    assert summary["images"] == 8
    assert {"path": "PRED", "reason": "unlabelled", "files": 3} in summary["left_out"]
    assert {"path": "notes.txt", "reason": "not a YES or NO folder", "files": 1} in summary["left_out"]
    assert {"path": "Yes/readme.txt", "reason": "not an image file", "files": 1} in summary["left_out"]
    placed = {p.name for p in (tmp_path / "dest").rglob("*") if p.is_file()}
    assert not any(name.startswith("pred") for name in placed)
    assert all(row["class"] in ("yes", "no") for row in read_manifest(tmp_path / "dest"))


def test_same_image_under_yes_and_no_is_a_conflict_kept_in_one_split(tmp_path):
    src = tmp_path / "src"
    build_source(src, {"yes": 6, "no": 6}, variants=0)
    (src / "NO" / "relabelled.png").write_bytes((src / "YES" / "yes0.png").read_bytes())
    summary = prepare_data(src, tmp_path / "dest")
    assert summary["conflicts"] == [{"sha256": fingerprint(src / "YES" / "yes0.png").sha256,
                                     "paths": ["NO/relabelled.png", "YES/yes0.png"]}]
    assert [g["paths"] for g in summary["mixed_groups"]] == [["NO/relabelled.png", "YES/yes0.png"]]
    rows = {r["path"]: r["split"] for r in read_manifest(tmp_path / "dest")}
    assert rows["NO/relabelled.png"] == rows["YES/yes0.png"]


def test_unreadable_images_are_reported_and_the_rest_prepared(tmp_path):
    src = tmp_path / "src"
    build_source(src, {"yes": 5, "no": 5}, variants=0)
    (src / "YES" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "NO" / "empty.png").write_bytes(b"")
    summary = prepare_data(src, tmp_path / "dest")
    assert summary["images"] == 10
    assert [u["path"] for u in summary["unreadable"]] == ["NO/empty.png", "YES/broken.jpg"]
    assert all(u["error"].startswith("not a readable image") for u in summary["unreadable"])
    assert not list((tmp_path / "dest").rglob("broken.jpg"))


def test_summary_file_matches_the_returned_report(tmp_path, families):
    returned = prepare_data(tmp_path / "src", tmp_path / "dest")
    written = json.loads((tmp_path / "dest" / "summary.json").read_text())
    assert written == {k: v for k, v in returned.items() if k not in ("linked", "copied")}


@pytest.mark.parametrize("text, message", [
    ("70,20", "three non-negative numbers"),
    ("70,20,20", "must sum to 100"),
    ("a,b,c", "three numbers"),
    ("110,-10,0", "non-negative"),
    ("nan,50,50", "non-negative"),
])
def test_bad_split_is_refused_in_words(text, message):
    with pytest.raises(PrepareError, match=message):
        parse_split(text)


def test_good_split_parses():
    assert parse_split("60, 30, 10") == (60.0, 30.0, 10.0)
    assert check_split((33.4, 33.3, 33.3)) == (33.4, 33.3, 33.3)


def test_missing_source_and_missing_class_folders_are_refused(tmp_path):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_data(tmp_path / "nowhere", tmp_path / "dest")
    (tmp_path / "src" / "yes").mkdir(parents=True)
    with pytest.raises(PrepareError, match="missing: NO"):
        prepare_data(tmp_path / "src", tmp_path / "dest")
    (tmp_path / "src" / "No").mkdir()
    with pytest.raises(PrepareError, match="hold no images"):
        prepare_data(tmp_path / "src", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_two_spellings_of_one_class_folder_are_refused(tmp_path):
    build_source(tmp_path / "src", {"yes": 2, "no": 2}, variants=0)
    if (tmp_path / "src" / "yes").exists():
        pytest.skip("this filesystem ignores letter case")
    (tmp_path / "src" / "yes").mkdir()
    with pytest.raises(PrepareError, match="both YES/ and yes/"):
        prepare_data(tmp_path / "src", tmp_path / "dest")


def test_non_empty_destination_needs_force_which_replaces_only_its_own_outputs(tmp_path, families):
    dest = tmp_path / "dest"
    (dest / "TRAIN" / "yes").mkdir(parents=True)
    (dest / "TRAIN" / "yes" / "stale.png").write_bytes(b"from an earlier run")
    (dest / "keep.txt").write_text("the user's own notes")
    with pytest.raises(PrepareError, match="not empty.*--force"):
        prepare_data(tmp_path / "src", dest)
    assert (dest / "TRAIN" / "yes" / "stale.png").exists()
    prepare_data(tmp_path / "src", dest, force=True)
    assert not (dest / "TRAIN" / "yes" / "stale.png").exists()
    assert (dest / "keep.txt").read_text() == "the user's own notes"


def test_destination_overlapping_the_source_is_refused(tmp_path, families):
    src = tmp_path / "src"
    with pytest.raises(PrepareError, match="inside the source folder"):
        prepare_data(src, src / "YES" / "out")
    nested = tmp_path / "outer" / "TRAIN"
    nested.parent.mkdir()
    src.rename(nested)
    with pytest.raises(PrepareError, match="--force would replace"):
        prepare_data(nested, tmp_path / "outer", force=True)
    assert (nested / "YES" / "yes0.png").exists()


def test_worker_processes_give_the_serial_fingerprints_and_report_progress(tmp_path):
    build_source(tmp_path / "src", {"yes": 40, "no": 30}, variants=0)
    paths = sorted((tmp_path / "src").rglob("*.png"))
    calls = []
    pooled = fingerprint_all(paths, workers=2, progress=lambda done, total: calls.append((done, total)))
    assert len(paths) >= 64  # enough to use the process pool
    assert pooled == fingerprint_all(paths, workers=1)
    assert calls == [(k, len(paths)) for k in range(1, len(paths) + 1)]


def test_near_pairs_match_a_direct_count(tmp_path):
    rng = np.random.default_rng(0)
    plain = rng.integers(0, 256, (70, 32), dtype=np.uint8)
    plain[10] = plain[3] ^ np.eye(32, dtype=np.uint8)[0]  # one bit from image 3
    mirrored = rng.integers(0, 256, (70, 32), dtype=np.uint8)
    mirrored[40] = plain[5]  # image 40 is image 5 mirrored
    bits = lambda a: np.unpackbits(a, axis=1).astype(int)
    direct = {(i, j) for i in range(70) for j in range(70) if i != j and min(
        np.sum(bits(plain)[i] != bits(plain)[j]), np.sum(bits(plain)[i] != bits(mirrored)[j])) <= 12}
    found = {tuple(p) for p in near_pairs(plain, mirrored, 12).tolist()}
    assert found == direct and {(3, 10), (10, 3), (5, 40)} <= found


@pytest.fixture(scope="module")
def br35h_prepared(shared_data, tmp_path_factory):
    dest = tmp_path_factory.mktemp("br35h")
    summary = prepare_data(shared_data / "br35h", dest, seed=0)
    return summary, read_manifest(dest), shared_data / "br35h"


@pytest.mark.slow
def test_br35h_no_near_duplicate_pair_crosses_splits(br35h_prepared):
    summary, rows, root = br35h_prepared
    plain = np.array([bytearray.fromhex(r["perceptual_hash"]) for r in rows], np.uint8)
    mirrored = hash_arrays(fingerprint_all([root / r["path"] for r in rows]))[1]
    pairs = near_pairs(plain, mirrored, MAX_DISTANCE)
    split = np.array([r["split"] for r in rows])
    assert len(pairs) > 1000  # the set is full of near duplicates: the check has something to check
    assert np.all(split[pairs[:, 0]] == split[pairs[:, 1]])
    assert summary["images"] == 3000 and summary["classes"] == {"yes": 1500, "no": 1500}
    assert summary["left_out"][0] == {"path": "pred", "reason": "unlabelled", "files": 60}
    for name, wanted in zip(SPLITS, (0.7, 0.2, 0.1)):
        assert abs(summary["splits"][name]["images"] / 3000 - wanted) < 0.02


@pytest.mark.slow
def test_br35h_outline_test_images_sit_with_their_earlier_copies(br35h_prepared):
    """54+ of y701-y800 have a near copy among y0-y700 (shared data README): same split each."""
    _, rows, _ = br35h_prepared
    number = {r["path"]: int(re.sub(r"\D", "", r["path"].split("/")[1])) for r in rows}
    yes = [r for r in rows if r["class"] == "yes"]
    early_groups = {}
    for r in yes:
        if number[r["path"]] <= 700:
            early_groups.setdefault(r["group"], set()).add(r["split"])
    late = [r for r in yes if 701 <= number[r["path"]] <= 800 and r["group"] in early_groups]
    assert len(late) >= 54
    assert all(early_groups[r["group"]] == {r["split"]} for r in late)


def test_a_prepared_split_reads_back_with_its_near_duplicate_groups(tmp_path, families):
    """find_split gives each scan its manifest group, so statistics can draw a group as one unit."""
    from pipeline.data.datasets import find_split

    prepare_data(tmp_path / "src", tmp_path / "dest", seed=1)
    rows = {row["path"]: row for row in read_manifest(tmp_path / "dest")}
    group_of = {f"{row['class']}/{Path(path).name}": f"group {row['group']}" for path, row in rows.items()}
    for split in SPLITS:
        examples = find_split(tmp_path / "dest", split)
        assert examples and all(e.group == group_of[f"{e.path.parent.name}/{e.path.name}"] for e in examples)
    members = [e for split in SPLITS for e in find_split(tmp_path / "dest", split)]
    assert len({e.group for e in members}) == len(families) < len(members)
