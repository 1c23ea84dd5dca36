"""The label-review file of a split: doubtful scans named by content, placed with their groups."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.data.label_review import REVIEW_NAME, LabelReviewError, place_review, read_review

ROOT = Path(__file__).resolve().parents[3]


def split_with_manifest(dest: Path, rows: list[tuple[str, str, str]]) -> Path:
    """Write a prepared folder's manifest.csv for (path, group, split) rows; return the folder."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = ["path,class,sha256,perceptual_hash,group,split"]
    lines += [f"{path},{path.split('/')[0]},{sha(path)},0,{group},{split}" for path, group, split in rows]
    (dest / "manifest.csv").write_text("\n".join(lines) + "\n")
    return dest


def sha(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


def review_list(folder: Path, *entries: tuple[str, list[str]]) -> Path:
    path = folder / "review.json"
    path.write_text(json.dumps({"format": 1, "groups": [
        {"reason": reason, "scans": [{"path": p, "sha256": sha(p)} for p in paths]}
        for reason, paths in entries]}))
    return path


def test_a_review_is_placed_with_the_groups_of_the_split_and_read_back(tmp_path):
    dest = split_with_manifest(tmp_path / "split", [("no/a.jpg", "7", "TEST"), ("no/b.jpg", "7", "TEST"),
                                                    ("yes/c.jpg", "8", "TRAIN")])
    placed = place_review(review_list(tmp_path, ("a bright region", ["no/a.jpg", "no/b.jpg"])), dest)
    assert [(g["group"], g["split"]) for g in placed["groups"]] == [("group 7", "TEST")]
    assert json.loads((dest / REVIEW_NAME).read_text()) == placed
    assert read_review(dest) == {"group 7": "a bright region"}
    assert read_review(tmp_path) == {}  # a split without a review file


def test_a_listed_scan_missing_from_the_split_or_spanning_groups_is_refused(tmp_path):
    dest = split_with_manifest(tmp_path / "split", [("no/a.jpg", "7", "TEST"), ("no/b.jpg", "9", "TEST")])
    with pytest.raises(LabelReviewError, match="no/x.jpg is not in the split"):
        place_review(review_list(tmp_path, ("r", ["no/a.jpg", "no/x.jpg"])), dest)
    with pytest.raises(LabelReviewError, match="lie in 2 groups"):
        place_review(review_list(tmp_path, ("r", ["no/a.jpg", "no/b.jpg"])), dest)
    with pytest.raises(LabelReviewError, match="no manifest.csv"):
        place_review(review_list(tmp_path, ("r", ["no/a.jpg"])), tmp_path / "empty")
    (tmp_path / "bad.json").write_text('{"groups": [{"reason": ""}]}')
    with pytest.raises(LabelReviewError, match="each with a reason and scans"):
        place_review(tmp_path / "bad.json", dest)


def test_the_shipped_br35h_review_lists_one_group_by_content():
    review = json.loads((ROOT / "docs" / "label_review" / "br35h.json").read_text())
    [group] = review["groups"]
    assert len(group["scans"]) == 7 and all(len(s["sha256"]) == 64 for s in group["scans"])
    assert all(s["path"].startswith("no/") for s in group["scans"]) and "radiologist" in group["reason"]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "br35h").is_dir(), reason="needs ../shared/data/br35h")
def test_the_shipped_br35h_review_names_the_real_files_by_their_content():
    review = json.loads((ROOT / "docs" / "label_review" / "br35h.json").read_text())
    for scan in review["groups"][0]["scans"]:
        data = (ROOT.parent / "shared" / "data" / "br35h" / scan["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == scan["sha256"], scan["path"]
