"""Doubtful labels, reported both ways and never changed: the label-review file of a split.

A reviewed list names scans by content (sha256) with the reason they are in doubt, e.g. the
project's ``docs/label_review/br35h.json``. ``prepare-data --label-review LIST`` places it with
the split as ``label_review.json``, each entry resolved to the near-duplicate group (or case)
the split put its scans in. ``evaluate`` and the model card then report every metric both with
all scans and without the whole groups under review. No label in the data is touched.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

REVIEW_NAME = "label_review.json"


class LabelReviewError(ValueError):
    """A review list that cannot be used; the message says why."""


def read_review(folder: str | Path) -> dict[str, str]:
    """Return {group: reason} of a split's label-review file, or {} when it has none.

    Raises:
        LabelReviewError: the file is there but not a review file.
    """
    path = Path(folder) / REVIEW_NAME
    if not path.is_file():
        return {}
    entries = _entries(path)
    if any("group" not in entry for entry in entries):
        raise LabelReviewError(f"{path}: every entry needs the \"group\" prepare-data gave it")
    return {str(entry["group"]): str(entry["reason"]) for entry in entries}


def place_review(source: str | Path, dest: str | Path) -> dict:
    """Write ``dest/label_review.json``: the list's entries with their groups in the split at ``dest``.

    Args:
        source: a review list (``{"format": 1, "groups": [{"reason": ..., "scans":
            [{"path": ..., "sha256": ...}]}]}``).
        dest: a folder prepared by ``prepare-data`` (its manifest.csv gives sha256 -> group).

    Returns:
        What was written.

    Raises:
        LabelReviewError: a listed scan is not in the split, or its scans span several groups.
    """
    source, dest = Path(source), Path(dest)
    placed = _manifest(dest)
    groups = []
    for entry in _entries(source):
        found = {placed.get(scan["sha256"]) for scan in entry["scans"]}
        if None in found:
            missing = [s["path"] for s in entry["scans"] if s["sha256"] not in placed]
            raise LabelReviewError(f"{source}: {', '.join(missing)} is not in the split at {dest}")
        if len(found) != 1:
            raise LabelReviewError(f"{source}: the scans of one entry lie in {len(found)} groups "
                                   f"({', '.join(sorted(g for g, _ in found))}); list each group apart")
        (group, split), = found
        groups.append({"group": group, "split": split, "reason": entry["reason"],
                       "scans": entry["scans"]})
    review = {"format": 1, "source": str(source), "groups": groups}
    (dest / REVIEW_NAME).write_text(json.dumps(review, indent=2) + "\n", encoding="utf-8")
    return review


def _entries(path: Path) -> list[dict]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelReviewError(f"{path} cannot be read as a label-review file: {exc}") from exc
    entries = content.get("groups") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("reason"), str) and e["reason"].strip()
            and isinstance(e.get("scans"), list) and e["scans"] for e in entries):
        raise LabelReviewError(f'{path}: expected {{"groups": [{{"reason": "...", "scans": '
                               '[{"path": ..., "sha256": ...}]}]}, each with a reason and scans')
    return entries


def _manifest(dest: Path) -> dict[str, tuple[str, str]]:
    """Return {sha256: (group, split)} from a prepared folder's manifest."""
    path = dest / "manifest.csv"
    if not path.is_file():
        raise LabelReviewError(f"{dest} has no manifest.csv: prepare it with prepare-data first")
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["sha256"]: (f"group {row['group']}", row["split"]) for row in csv.DictReader(handle)}
