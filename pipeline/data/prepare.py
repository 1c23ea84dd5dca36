"""Leak-free data preparation: ``SRC/{YES,NO}`` -> ``DEST/{TRAIN,VALIDATION,TEST}/{yes,no}``.

A file-level split of a collection that repeats its scans (Br35H does, with other contrast, crop,
size or as a mirror image) puts copies of one scan on both sides of an evaluation and inflates every
score measured on it. Images are therefore grouped first (``pipeline.data.near_duplicates``) and whole
groups go to one split, stratified by class, so no group ever spans two splits.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.near_duplicates import (
    HASH_SIZE,
    MAX_DISTANCE,
    Fingerprint,
    Progress,
    fingerprint_all,
    group_ids,
    hash_arrays,
    near_pairs,
)

SPLITS = ("TRAIN", "VALIDATION", "TEST")
CLASSES = ("yes", "no")
UNLABELLED = ("pred",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MANIFEST_FIELDS = ("path", "class", "sha256", "perceptual_hash", "group", "split")


class PrepareError(ValueError):
    """A source or destination that cannot be prepared as asked; the message says why."""


@dataclass(frozen=True)
class Source:
    """One image below a class folder; ``relative`` is its POSIX path relative to SRC."""

    path: Path
    relative: str
    label: str


@dataclass
class Plan:
    """Where every readable source goes, and what was found on the way."""

    sources: list[Source]
    fingerprints: list[Fingerprint]
    groups: np.ndarray
    splits: np.ndarray
    left_out: list[dict]
    unreadable: list[dict]


def parse_split(text: str) -> tuple[float, ...]:
    """Parse ``"70,20,10"`` into TRAIN/VALIDATION/TEST percentages (see ``check_split``)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise PrepareError(f"--split must be three numbers such as 70,20,10, not {text!r}") from None
    return check_split(values)


def check_split(values: Sequence[float]) -> tuple[float, ...]:
    """Return TRAIN/VALIDATION/TEST percentages after checking them.

    Args:
        values: three non-negative numbers summing to 100.

    Returns:
        The three percentages as floats.
    """
    values = tuple(float(v) for v in values)
    if len(values) != 3 or any(not np.isfinite(v) or v < 0 for v in values):
        shown = ",".join(f"{v:g}" for v in values)
        raise PrepareError(f"--split must be three non-negative numbers such as 70,20,10, not {shown}")
    if abs(sum(values) - 100) > 1e-6:
        raise PrepareError(f"--split must sum to 100 (TRAIN,VALIDATION,TEST), not {sum(values):g}")
    return values


def _class_folders(src: Path) -> tuple[dict[str, Path], list[dict]]:
    """Return the YES/NO folders of SRC (any letter case) and what else SRC holds."""
    folders: dict[str, Path] = {}
    left_out = []
    for entry in sorted(src.iterdir()):
        name = entry.name.lower()
        if entry.is_dir() and name in CLASSES:
            if name in folders:
                raise PrepareError(f"{src} has both {folders[name].name}/ and {entry.name}/; "
                                   "merge them into one folder")
            folders[name] = entry
        elif not entry.name.startswith("."):
            reason = "unlabelled" if name in UNLABELLED else "not a YES or NO folder"
            left_out.append({"path": entry.name, "reason": reason, "files": _count_files(entry)})
    missing = [c.upper() for c in CLASSES if c not in folders]
    if missing:
        raise PrepareError(f"{src} needs YES and NO folders of images; missing: {', '.join(missing)}")
    return folders, left_out


def _count_files(entry: Path) -> int:
    return sum(1 for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else 1


def find_sources(src: Path) -> tuple[list[Source], list[dict]]:
    """Return the images below SRC's YES and NO folders, sorted, and the entries left out.

    Args:
        src: the folder holding YES and NO (and perhaps PRED, which is unlabelled).

    Returns:
        The sources, and one ``{"path", "reason", "files"}`` record per entry left out.
    """
    if not src.is_dir():
        raise PrepareError(f"source folder {src} does not exist" if not src.exists()
                           else f"source {src} is not a folder")
    folders, left_out = _class_folders(src)
    sources = []
    for label, folder in folders.items():
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(src).as_posix()
            if not path.is_file() or any(part.startswith(".") for part in Path(relative).parts):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                sources.append(Source(path, relative, label))
            else:
                left_out.append({"path": relative, "reason": "not an image file", "files": 1})
    if not sources:
        raise PrepareError(f"the YES and NO folders of {src} hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(sources, key=lambda s: s.relative), left_out


def assign_splits(groups: np.ndarray, positive: np.ndarray, proportions: Sequence[float],
                  seed: int) -> np.ndarray:
    """Assign whole groups to splits, stratified by each group's majority class.

    Groups are visited in a seeded random order and each goes to the split furthest below its
    target image count, so no split collects only large or only small groups.

    Args:
        groups: (n,) group id per image.
        positive: (n,) bool, True for YES images.
        proportions: TRAIN/VALIDATION/TEST shares (any scale).
        seed: seeds the order; the same seed gives the same assignment.

    Returns:
        (n,) split index per image (0 TRAIN, 1 VALIDATION, 2 TEST).
    """
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    majority_yes = np.bincount(groups, weights=positive) * 2 >= sizes
    share = np.asarray(proportions, float) / sum(proportions)
    split_of_group = np.zeros(len(sizes), np.int64)
    for stratum in (True, False):
        members = rng.permutation(np.flatnonzero(majority_yes == stratum))
        target, filled = share * sizes[members].sum(), np.zeros(len(share))
        for group in members:
            split = int(np.argmax(np.where(share > 0, target - filled, -np.inf)))
            split_of_group[group] = split
            filled[split] += sizes[group]
    return split_of_group[groups]


def _plan_sources(sources: list[Source], left_out: list[dict], proportions: Sequence[float],
                  seed: int, max_distance: int, prints: list[Fingerprint]) -> Plan:
    unreadable = [{"path": s.relative, "error": f.error} for s, f in zip(sources, prints) if f.error]
    kept = [(s, f) for s, f in zip(sources, prints) if f.error is None]
    if not kept:
        raise PrepareError("none of the files in the YES and NO folders is a readable image")
    sources, prints = [s for s, _ in kept], [f for _, f in kept]
    groups = group_ids(len(sources), near_pairs(*hash_arrays(prints), max_distance))
    positive = np.array([s.label == "yes" for s in sources])
    splits = assign_splits(groups, positive, proportions, seed)
    return Plan(sources, prints, groups, splits, left_out, unreadable)


def manifest_rows(plan: Plan) -> list[dict]:
    """Return one manifest row per placed image, in path order."""
    return [{"path": s.relative, "class": s.label, "sha256": f.sha256,
             "perceptual_hash": f.dhash.hex(), "group": int(g), "split": SPLITS[k]}
            for s, f, g, k in zip(plan.sources, plan.fingerprints, plan.groups, plan.splits)]


def summarize(plan: Plan, proportions: Sequence[float], seed: int, max_distance: int) -> dict:
    """Return the report of a plan: counts, duplicates, class balance per split, conflicts."""
    labels = np.array([s.label for s in plan.sources])
    shas = [f.sha256 for f in plan.fingerprints]
    sizes = np.bincount(plan.groups)
    distinct = np.bincount([g for g, _ in {(int(g), s) for g, s in zip(plan.groups, shas)}])
    return {
        "images": len(labels),
        "classes": {c: int(np.sum(labels == c)) for c in CLASSES},
        "exact_duplicates": len(shas) - len(set(shas)),
        "groups": len(sizes),
        "near_duplicate_groups": int(np.sum(distinct >= 2)),
        "largest_group": int(sizes.max()),
        "splits": {name: _split_balance(labels[plan.splits == k]) for k, name in enumerate(SPLITS)},
        "requested": dict(zip(SPLITS, (float(p) for p in proportions))),
        "seed": seed,
        "hash": f"difference hash {HASH_SIZE}x{HASH_SIZE}, mirror-aware",
        "max_distance": max_distance,
        "conflicts": _conflicts(plan),
        "mixed_groups": _mixed_groups(plan, labels),
        "left_out": plan.left_out,
        "unreadable": plan.unreadable,
    }


def _split_balance(labels: np.ndarray) -> dict:
    counts = {c: int(np.sum(labels == c)) for c in CLASSES}
    share = counts["yes"] / len(labels) if len(labels) else None
    return {"images": len(labels), **counts, "yes_share": share}


def _conflicts(plan: Plan) -> list[dict]:
    """Return identical files found under both YES and NO: one image, two labels."""
    by_hash: dict[str, list[Source]] = {}
    for s, f in zip(plan.sources, plan.fingerprints):
        by_hash.setdefault(f.sha256, []).append(s)
    return [{"sha256": sha, "paths": [s.relative for s in found]}
            for sha, found in sorted(by_hash.items()) if len({s.label for s in found}) > 1]


def _mixed_groups(plan: Plan, labels: np.ndarray) -> list[dict]:
    """Return near-duplicate groups holding both YES and NO images (kept in one split)."""
    yes, sizes = np.bincount(plan.groups, weights=labels == "yes"), np.bincount(plan.groups)
    mixed = np.flatnonzero((yes > 0) & (yes < sizes))
    return [{"group": int(g), "split": SPLITS[plan.splits[plan.groups == g][0]],
             "paths": [s.relative for s, k in zip(plan.sources, plan.groups) if k == g]}
            for g in mixed]


def _outputs(dest: Path) -> list[Path]:
    return [dest / name for name in (*SPLITS, "manifest.csv", "summary.json")]


def check_destination(dest: Path, class_folders: Sequence[Path], force: bool) -> None:
    """Refuse a DEST that holds anything (unless ``force``) or overlaps the source folders.

    Args:
        dest: where TRAIN/VALIDATION/TEST, manifest.csv and summary.json go.
        class_folders: the source YES and NO folders.
        force: allow replacing an earlier preparation in DEST.
    """
    dest = dest.resolve()
    if dest.exists() and not dest.is_dir():
        raise PrepareError(f"destination {dest} exists and is not a folder")
    for folder in (f.resolve() for f in class_folders):
        if dest.is_relative_to(folder):
            raise PrepareError(f"destination {dest} lies inside the source folder {folder}")
        if any(folder.is_relative_to(out) for out in _outputs(dest)):
            raise PrepareError(f"source folder {folder} lies inside {dest}'s outputs, which --force "
                               "would replace; choose another destination")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise PrepareError(f"destination {dest} is not empty; choose an empty folder, or pass --force "
                           "to replace an earlier preparation there (TRAIN, VALIDATION, TEST, "
                           "manifest.csv, summary.json; nothing else is touched)")


def _clear(dest: Path) -> None:
    """Remove an earlier preparation, so no stale file survives into the new split."""
    for out in _outputs(dest):
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()


def _place(source: Path, target: Path) -> bool:
    """Hard-link ``source`` to ``target``, copying where links cannot be made; True if linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(source, target)
        return False


def write(plan: Plan, dest: Path, summary: dict) -> dict:
    """Place every planned image under DEST and write ``manifest.csv`` and ``summary.json``.

    Args:
        plan: the plan to carry out.
        dest: the checked destination folder.
        summary: the plan's report, written as ``summary.json``.

    Returns:
        ``{"linked": n, "copied": n}``.
    """
    _clear(dest)
    linked = 0
    for source, split in zip(plan.sources, plan.splits):
        inside = Path(source.relative).parts[1:]  # below the YES/NO folder
        linked += _place(source.path, dest.joinpath(SPLITS[split], source.label, *inside))
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(manifest_rows(plan))
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return {"linked": linked, "copied": len(plan.sources) - linked}


def prepare_data(src: str | Path, dest: str | Path, proportions: Sequence[float] = (70, 20, 10),
                 seed: int = 0, force: bool = False, max_distance: int = MAX_DISTANCE,
                 workers: int | None = None, progress: Progress | None = None) -> dict:
    """Split SRC's YES/NO images into DEST's TRAIN/VALIDATION/TEST without leaking duplicates.

    Args:
        src: the folder holding YES and NO (PRED and anything else is left out and reported).
        dest: an empty folder, or one holding an earlier preparation when ``force``.
        proportions: TRAIN/VALIDATION/TEST percentages, non-negative, summing to 100.
        seed: the same seed gives a byte-identical manifest.
        force: replace an earlier preparation in DEST.
        max_distance: near-duplicate limit in bits of the 256-bit difference hash.
        workers: hashing processes (default: one per core).
        progress: called with (done, total) as images are hashed.

    Returns:
        The summary (also written to ``DEST/summary.json``) plus ``linked``/``copied`` counts.
    """
    src, dest = Path(src), Path(dest)
    proportions = check_split(proportions)
    sources, left_out = find_sources(src)
    check_destination(dest, {src / Path(s.relative).parts[0] for s in sources}, force)
    prints = fingerprint_all([s.path for s in sources], workers, progress)
    planned = _plan_sources(sources, left_out, proportions, seed, max_distance, prints)
    summary = summarize(planned, proportions, seed, max_distance)
    dest.mkdir(parents=True, exist_ok=True)
    return {**summary, **write(planned, dest, summary)}
