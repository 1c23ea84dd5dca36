"""Labelled image folders: find the examples, split by patient, decode once into arrays.

Three layouts are understood: ``DATA/{TRAIN,VALIDATION,TEST}/{yes,no}/`` (what ``prepare-data``
writes), a flat ``DATA/{yes,no}/`` and the LGG layout ``DATA/{tumor,no_tumor}/<case>/<slice>.jpg``
with ``<slice>_mask.png`` beside each tumor slice. For evaluation, NIfTI volumes anywhere in the
folder are listed too (``evaluation_volumes``); each of their axial slices is one example.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.annotations import is_mask_volume, volume_stem

SPLITS = ("TRAIN", "VALIDATION", "TEST")
CLASS_FOLDERS = {"yes": 1, "no": 0, "tumor": 1, "no_tumor": 0}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_SUFFIX = "_mask.png"
CACHE_VERSION = "2"


class DataError(ValueError):
    """A data folder that cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class Example:
    """One labelled image; ``group`` is the patient (case) it belongs to, or the file stem.

    ``frame`` picks one scan of a file that holds several (a volume's axial slice, as numbered by
    ``read_scan``); None is the file's first.
    """

    path: Path
    label: int
    group: str
    frame: int | None = None


def _is_image(path: Path) -> bool:
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.name.endswith(MASK_SUFFIX)
            and not path.name.startswith("."))


def _class_examples(folder: Path, label: int) -> list[Example]:
    """Return the images below one class folder, grouped by their first sub-folder (the case)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and _is_image(p)):
        relative = path.relative_to(folder)
        group = relative.parts[0] if len(relative.parts) > 1 else path.stem
        found.append(Example(path, label, group))
    return found


def find_examples(folder: str | Path) -> list[Example]:
    """Return the labelled images of a ``yes/no`` or ``tumor/no_tumor`` folder.

    Args:
        folder: a folder holding class folders (``yes``/``no`` or ``tumor``/``no_tumor``).

    Returns:
        The examples, sorted by class folder then path.
    """
    folder = Path(folder)
    present = [name for name in CLASS_FOLDERS if (folder / name).is_dir()]
    if not present:
        raise DataError(f"{folder} has no class folders: expected 'yes' and 'no' "
                        "(or 'tumor' and 'no_tumor') inside it")
    examples = [e for name in present for e in _class_examples(folder / name, CLASS_FOLDERS[name])]
    if not examples:
        raise DataError(f"{folder} has class folders but no images in them")
    return examples


def has_splits(folder: str | Path) -> bool:
    """Tell whether a folder holds TRAIN/VALIDATION/TEST sub-folders."""
    return all((Path(folder) / name).is_dir() for name in SPLITS)


def find_split(folder: str | Path, split: str) -> list[Example]:
    """Return the examples of one split (TRAIN, VALIDATION or TEST) of a prepared folder.

    When the folder's ``manifest.csv`` comes from ``prepare-data``, each example's group is its
    near-duplicate group, so that statistics over the split can treat a group as one unit.
    """
    path = Path(folder) / split
    if not path.is_dir():
        raise DataError(f"{folder} has no {split} folder: run 'tumorlens prepare-data' first")
    examples = find_examples(path)
    groups = _manifest_groups(Path(folder), split)
    if not groups:
        return examples
    return [replace(e, group=groups.get(e.path.relative_to(path).as_posix(), e.group)) for e in examples]


def _manifest_groups(folder: Path, split: str) -> dict[str, str]:
    """Return {path below the split folder: group} from the folder's manifest, else {}.

    A ``prepare-data`` manifest gives near-duplicate groups (SRC/<YES>/<rest> was placed at
    <split>/<class>/<rest>); a ``split-cases`` manifest gives cases (slices were placed at
    <split>/<label>/<file name>).
    """
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        rows = [row for row in reader if row.get("split") == split]
    if {"path", "class", "group"} <= columns:
        return {"/".join((row["class"], *Path(row["path"]).parts[1:])): f"group {row['group']}"
                for row in rows}
    if {"label", "case", "source"} <= columns:
        return {f"{row['label']}/{Path(row['source']).name}": row["case"] for row in rows}
    return {}


def evaluation_examples(folder: str | Path) -> list[Example]:
    """Return what to evaluate in a folder: its TEST split when it has one, else all of it."""
    return find_split(folder, "TEST") if has_splits(folder) else find_examples(folder)


def evaluation_volumes(folder: str | Path) -> list[tuple[Path, int | None]]:
    """Return the NIfTI image volumes to evaluate in a folder (its TEST split when it has one).

    Mask volumes (``*_seg``, ``*_mask``) are never listed as images.

    Returns:
        (path, label) sorted by path; the label is that of the class folder (``yes``, ``no``,
        ``tumor``, ``no_tumor``) the volume lies in, None when it lies in none.
    """
    root = Path(folder) / "TEST" if has_splits(folder) else Path(folder)
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and _is_volume(p)):
        parts = path.relative_to(root).parts
        found.append((path, CLASS_FOLDERS.get(parts[0]) if len(parts) > 1 else None))
    return found


def _is_volume(path: Path) -> bool:
    return (volume_stem(path.name) is not None and not is_mask_volume(path.name)
            and not path.name.startswith("."))


def manifest_digest(folder: str | Path) -> str | None:
    """Return the sha256 of ``folder/manifest.csv``, or None when the folder has none."""
    path = Path(folder) / "manifest.csv"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assign_cases(cases: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    shuffled = sorted(cases)
    random.Random(seed).shuffle(shuffled)
    bounds = np.round(np.cumsum(fractions) / sum(fractions) * len(shuffled)).astype(int)
    return {case: SPLITS[int(np.searchsorted(bounds, i, side="right"))]
            for i, case in enumerate(shuffled)}


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(source.resolve(), target)


def split_by_case(src: str | Path, dest: str | Path, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> dict[str, int]:
    """Split a case-grouped folder into TRAIN/VALIDATION/TEST by case, never by slice.

    Files are linked (symlinks), masks travel with their slice, and ``dest/manifest.csv`` records
    every slice's split, label and case.

    Args:
        src: a folder with ``tumor/<case>/`` and ``no_tumor/<case>/`` (or ``yes``/``no``).
        dest: where the split is written; existing links are kept.
        fractions: shares of cases for TRAIN, VALIDATION and TEST.
        seed: the shuffle seed, so the split can be made again.

    Returns:
        The number of slices in each split.
    """
    src, dest = Path(src), Path(dest)
    examples = find_examples(src)
    assignment = _assign_cases({e.group for e in examples}, fractions, seed)
    counts = dict.fromkeys(SPLITS, 0)
    rows = []
    for example in examples:
        split = assignment[example.group]
        target = dest / split / ("yes" if example.label else "no") / example.path.name
        _link(example.path, target)
        mask = example.path.with_name(example.path.stem + MASK_SUFFIX)
        if mask.is_file():
            _link(mask, target.with_name(mask.name))
        counts[split] += 1
        rows.append((split, "yes" if example.label else "no", example.group,
                     example.path.relative_to(src).as_posix()))
    with open(dest / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("split", "label", "case", "source"))
        writer.writerows(sorted(rows))
    return counts


def load_image(path: Path, size: tuple[int, int], color_mode: str) -> np.ndarray:
    """Decode one image and resize it (bilinear) to ``size`` (width, height) as uint8 (h, w, c).

    Colour conversion comes before resizing, in the same order as ``Analyzer.prepare``, so the
    model trains on the pixels it will be shown.
    """
    with Image.open(path) as image:
        image = image.convert("L" if color_mode == "grayscale" else "RGB")
        array = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    return array[..., None] if array.ndim == 2 else array


def _cache_key(examples: Sequence[Example], size: tuple[int, int], color_mode: str) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{size}|{color_mode}".encode())
    for example in examples:
        stat = example.path.stat()
        digest.update(f"|{example.path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def _cached(cache_dir: str | Path | None, name: str, build) -> np.ndarray:
    """Return ``build()``, kept as ``cache_dir/name.npy`` and read from there when present."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    array = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return array


def _decode_all(examples: Sequence[Example], decode, workers: int) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.stack(list(pool.map(decode, examples)))


def load_arrays(examples: Sequence[Example], size: tuple[int, int], color_mode: str = "rgb",
                cache_dir: str | Path | None = None, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Decode every example once into one uint8 array, reusing an on-disk cache when present.

    Args:
        examples: the images to load.
        size: the model input size (width, height).
        color_mode: ``rgb`` or ``grayscale``.
        cache_dir: where a ``.npy`` copy is kept so later runs skip decoding; None keeps none.
        workers: decoding threads.

    Returns:
        ``(images, labels)``: uint8 (N, h, w, c) and int32 (N,).
    """
    labels = np.array([e.label for e in examples], dtype=np.int32)
    images = _cached(cache_dir, f"images-{_cache_key(examples, size, color_mode)}",
                     lambda: _decode_all(examples, lambda e: load_image(e.path, size, color_mode),
                                         workers))
    return images, labels


def mask_at_input_size(example: Example, size: tuple[int, int], annotations) -> np.ndarray:
    """Return an example's tumor outline resized (bilinear) to ``size`` as uint8 (h, w, 1).

    No-tumor scans and tumor scans without a known outline give an all-zero mask.
    """
    if not example.label or not annotations.has(example.path):
        return np.zeros((size[1], size[0], 1), dtype=np.uint8)
    with Image.open(example.path) as image:
        original = image.size
    mask = Image.fromarray(annotations.mask(example.path, original).astype(np.uint8) * 255)
    return np.asarray(mask.resize(size, Image.Resampling.BILINEAR))[..., None]


def load_masks(examples: Sequence[Example], size: tuple[int, int], annotations,
               cache_dir: str | Path | None = None, workers: int = 2) -> np.ndarray:
    """Return every example's outline at the input size (see ``mask_at_input_size``), cached."""
    key = _cache_key(examples, size, f"mask|{annotations.source}")
    return _cached(cache_dir, f"masks-{key}",
                   lambda: _decode_all(examples, lambda e: mask_at_input_size(e, size, annotations),
                                       workers))
