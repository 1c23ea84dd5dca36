"""The measurements behind ``pipeline.data.near_duplicates.MAX_DISTANCE``, on the shared data.

For each limit it prints, on Br35H, the groups per class, the pairs joining a ``yes`` image to a
``no`` image (a wrong join unless the set mislabels a scan) and the largest group; on LGG FLAIR,
the groups and how many of them join two patients (wrong: slices of different people). Then the same
at the chosen limit without the mirror comparison, and a DCT perceptual hash for contrast.

    .venv/bin/python benchmarks/measure_near_duplicates.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.near_duplicates import (  # noqa: E402
    MAX_DISTANCE,
    distances,
    fingerprint_all,
    group_ids,
    hamming,
    hash_arrays,
)

DATA = ROOT.parent / "shared" / "data"
LIMITS = (8, 12, 16, 20, 24, 28, 32, 40, 44, 48)


def groups_at(dist: np.ndarray, limit: int) -> np.ndarray:
    """Return group ids when pairs within ``limit`` join."""
    i, j = np.nonzero(dist <= limit)
    return group_ids(len(dist), np.column_stack([i, j]))


def spanning(groups: np.ndarray, kinds: np.ndarray) -> int:
    """Return how many groups hold more than one kind (class or patient)."""
    return sum(1 for g in np.unique(groups) if len(set(kinds[groups == g])) > 1)


def br35h(limit_rows: list[int]) -> None:
    """Print the Br35H table."""
    files = sorted((DATA / "br35h" / "yes").glob("*.jpg")) + sorted((DATA / "br35h" / "no").glob("*.jpg"))
    labels = np.array([p.parent.name for p in files])
    plain, mirrored = hash_arrays(fingerprint_all(files))
    dist = distances(plain, mirrored)
    cross = labels[:, None] != labels[None, :]
    print(f"Br35H: {len(files)} images\n limit  yes groups  no groups  yes-no pairs  largest")
    for limit in limit_rows:
        groups = groups_at(dist, limit)
        print(f" {limit:5d}  {len(np.unique(groups[labels == 'yes'])):10d}  "
              f"{len(np.unique(groups[labels == 'no'])):9d}  {np.sum(np.triu(dist <= limit) & cross):12d}  "
              f"{np.bincount(groups).max():7d}")
    words = plain.view(np.uint64)
    plain_only = groups_at(hamming(words, words), MAX_DISTANCE)
    print(f" at {MAX_DISTANCE} without the mirror comparison: "
          f"{len(np.unique(plain_only[labels == 'yes']))} yes groups, "
          f"{len(np.unique(plain_only[labels == 'no']))} no groups")
    phash = np.array([_phash(p) for p in files])
    pdist = hamming(phash, phash)
    print(f" DCT perceptual hash (64 bits) yes-no pairs within 6: {np.sum(np.triu(pdist <= 6) & cross)}, "
          f"within 8: {np.sum(np.triu(pdist <= 8) & cross)}")


def _phash(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.packbits(imagehash.phash(image.convert("L")).hash).view(np.uint64)


def lgg(limit_rows: list[int]) -> None:
    """Print the LGG FLAIR table."""
    files = sorted(p for p in (DATA / "lgg_flair").rglob("*.jpg"))
    patients = np.array([p.parent.name for p in files])
    dist = distances(*hash_arrays(fingerprint_all(files)))
    print(f"LGG FLAIR: {len(files)} slices of {len(set(patients))} patients\n"
          " limit  groups  groups joining patients  largest")
    for limit in limit_rows:
        groups = groups_at(dist, limit)
        print(f" {limit:5d}  {len(np.unique(groups)):6d}  {spanning(groups, patients):23d}  "
              f"{np.bincount(groups).max():7d}")


def main() -> int:
    """Print both tables, skipping a data set that is not on this machine."""
    print(f"chosen limit: {MAX_DISTANCE} of 256 bits")
    for name, table in (("br35h", br35h), ("lgg_flair", lgg)):
        if (DATA / name).is_dir():
            table(list(LIMITS))
        else:
            print(f"{DATA / name} not found: skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
