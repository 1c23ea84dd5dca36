"""Sort a DICOM archive into studies and series, order their slices and say which series to analyse.

A hospital export is studies → series → slices in whatever folders and under whatever names the
sending system liked (often numbers without a suffix): only the UIDs tell what belongs together.
Headers alone are read (``stop_before_pixels``), so sorting thousands of files costs little more
than listing them; pixels are decoded later by ``pipeline.io.dicom``. A file that is not a DICOM
image is no error here: it lands in ``Archive.other_files``, for the scan reader to name.
``order_slices`` puts slices read file by file (``read_archive`` on one path) in the same order.

Nothing returned identifies the patient:

- UIDs embed the institution's root and often dates, and link records across systems. They leave
  only as ``uid_key``: an HMAC-SHA256 under a key the caller holds (the worker's per-installation
  secret), so one installation finds the same series again on every run, while nobody without the
  secret can confirm a guessed UID.
- Patient name, IDs, birth date and accession number are never copied out; codes and numbers are.
- SeriesDescription is free text, where an operator can type anything. It is kept, as radiologists
  know series by it, after ``clean_description`` has cut the patient's names, IDs and dates out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from pipeline.io.scans import BARE_DICOM_GROUPS
from pipeline.io.dicom_header import (SequenceGuess, as_vector, clean_description, guess_sequence, header_code,
                                      header_codes, header_number, orientation_name, own_value, slice_normal)

MIN_KEY_BYTES = 16
# BodyPartExamined values (PS3.16 Annex L, and what scanners write in practice) that mean the head.
BRAIN_PARTS = frozenset({"BRAIN", "HEAD", "HEADNECK", "HEAD_NECK", "HEAD NECK", "SKULL", "CEREBRUM",
                         "NEURO", "KOPF", "SCHAEDEL", "CRANE", "CRANIUM"})
_LOCALIZER_WORDS = re.compile(r"(?<![A-Z0-9])(LOCALI[SZ]ER|SCOUT|SURVEY|3[ _-]?PLANE[ _-]?LOC)(?![A-Z0-9])")


@dataclass(frozen=True)
class Slice:
    """One image of a series: a single-frame file, or one frame (from 0) of a multi-frame file."""

    path: str  # POSIX, relative to the archive root: how a scan is linked to its source
    frame: int | None
    position_mm: float | None  # along the series' slice normal; None when the header lacks geometry
    instance: int | None


@dataclass(frozen=True)
class SeriesInfo:
    """A series described without identifiers, from its first file's header and its slices."""

    number: int | None
    modality: str | None
    body_part: str | None
    description: str | None  # SeriesDescription with identifiers cut out (see the module docstring)
    image_type: tuple[str, ...]
    orientation: str  # axial, coronal, sagittal, oblique, mixed, or unknown without geometry
    slice_count: int
    spacing_mm: float | None
    spacing_from: str | None  # "positions", "SpacingBetweenSlices" or "SliceThickness"
    sequence: SequenceGuess


@dataclass(frozen=True)
class Series:
    """One series' slices in anatomical order, keyed by keyed hashes of its UIDs."""

    study_key: str
    key: str
    slices: tuple[Slice, ...]
    info: SeriesInfo


@dataclass(frozen=True)
class Study:
    """One study's series, by SeriesNumber."""

    key: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Archive:
    """The studies found under a root, and the files that held no DICOM image header."""

    studies: tuple[Study, ...]
    other_files: tuple[str, ...]

    @property
    def series(self) -> tuple[Series, ...]:
        """Return every series of every study, in order."""
        return tuple(series for study in self.studies for series in study.series)


@dataclass(frozen=True)
class Rules:
    """What a series must be to be analysed by default: selection as data, not code."""

    modalities: frozenset[str] = frozenset({"MR"})
    body_parts: frozenset[str] = BRAIN_PARTS
    min_slices: int = 5


@dataclass(frozen=True)
class Selection:
    """Whether a series is analysed, and why not."""

    series_key: str
    analyse: bool
    reason: str | None = None  # why not, e.g. "skipped: not MR (Modality CT)"


@dataclass(frozen=True, slots=True)
class _Frame:
    path: str
    frame: int | None
    study: str  # raw UIDs: they never leave this module
    series: str
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    instance: int | None


def uid_key(uid: str, key: bytes) -> str:
    """Return the keyed hash that stands for a DICOM UID outside this module.

    Args:
        uid: a StudyInstanceUID or SeriesInstanceUID.
        key: the installation's secret, at least 16 bytes; the same key gives the same hash.

    Returns:
        64 lowercase hex digits of HMAC-SHA256(key, uid).
    """
    _check_key(key)
    return hmac.new(key, uid.strip().rstrip("\0").encode("ascii", "replace"), hashlib.sha256).hexdigest()


def read_archive(root: str | os.PathLike, key: bytes,
                 paths: Iterable[str | os.PathLike] | None = None) -> Archive:
    """Read the headers of the files under root and sort them into studies and series.

    Args:
        root: the archive's folder; slice paths are given relative to it.
        key: the secret for ``uid_key``; a ValueError, before any file is read, when it is weak.
        paths: the files to consider (absolute or relative to root); by default every file below
            root, links to folders not followed.

    Returns:
        Studies in the order of their first file, series by SeriesNumber, slices anatomically.
    """
    _check_key(key)
    root = Path(root)
    files = sorted({root / path for path in paths} if paths is not None else _walk(root),
                   key=lambda path: _natural(path.as_posix()))
    groups: dict[tuple[str, str], list[_Frame]] = {}
    headers: dict[tuple[str, str], Dataset] = {}
    others = []
    for path in files:
        relative = Path(os.path.relpath(path, root)).as_posix()
        found = _read_frames(path, relative)
        if not found:
            others.append(relative)
            continue
        header, frames = found
        uids = (frames[0].study, frames[0].series)
        groups.setdefault(uids, []).extend(frames)
        headers.setdefault(uids, header)
    return Archive(_studies(groups, headers, key), tuple(others))


def select_series(series: Series, rules: Rules = Rules(), *, all_series: bool = False,
                  image_check: Callable[[Series], str | None] | None = None) -> Selection:
    """Decide whether a series is analysed by default, with the reason in words when it is not.

    A missing tag never skips a series (exports often drop them); ``image_check``, a look at the
    pixels that returns a reason or None, backs the tags up and runs only when they pass.

    Args:
        series: from ``read_archive``.
        rules: what may pass.
        all_series: analyse everything, whatever the tags say (no check runs).
        image_check: an optional check of the series' images.
    """
    if all_series:
        return Selection(series.key, True)
    reason = _tag_reason(series.info, rules) or (image_check(series) if image_check else None)
    if reason is None:
        return Selection(series.key, True)
    return Selection(series.key, False, reason if reason.startswith("skipped") else f"skipped: {reason}")


def order_slices(slices: Iterable[Slice]) -> tuple[Slice, ...]:
    """Return slices in anatomical order, as ``read_archive`` orders a series.

    Args:
        slices: one series' slices, ``position_mm`` measured along one normal.

    Returns:
        By position when every slice has one, else by InstanceNumber when every slice has one;
        ties, and the rest, by path (digit runs as numbers), then frame.
    """
    slices = list(slices)
    by_position = all(s.position_mm is not None for s in slices)
    by_instance = all(s.instance is not None for s in slices)
    return tuple(sorted(slices, key=lambda s: (s.position_mm if by_position else 0.0, s.instance if by_instance
                                               else 0, _natural(s.path), -1 if s.frame is None else s.frame)))


def slice_spacing(positions: Iterable[float | None]) -> float | None:
    """Return the median gap in mm between distinct slice positions; None with fewer than two."""
    distinct = sorted({p for p in positions if p is not None})
    gaps = [b - a for a, b in zip(distinct, distinct[1:])]
    return round(statistics.median(gaps), 3) if gaps else None


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the UID key must be the installation's secret, at least {MIN_KEY_BYTES} bytes")


def _walk(root: Path) -> Iterable[Path]:
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        yield from (Path(folder) / name for name in names)


def _natural(text: str) -> tuple:
    """Sort "IM2" before "IM10": digit runs compare as numbers."""
    return tuple(int(part) if index % 2 else part for index, part in enumerate(re.split(r"(\d+)", text)))


def _read_frames(path: Path, relative: str) -> tuple[Dataset, list[_Frame]] | None:
    """Return a file's header and its frames, or None when it holds no DICOM image header."""
    try:
        if not path.is_file():  # a pipe would block, a folder or a broken link cannot be read
            return None
        with open(path, "rb") as handle:
            head = handle.read(132)
            if head[128:132] != b"DICM" and head[:2] not in BARE_DICOM_GROUPS:
                return None
            handle.seek(0)
            header = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
            if not all(keyword in header for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "Rows")):
                return None  # a DICOMDIR, a report, a presentation state: no image
            return header, _frames(header, relative)
    except Exception:  # a damaged header is for the scan reader to explain
        return None


def _frames(header: Dataset, relative: str) -> list[_Frame]:
    study, series = (str(header[k].value).strip() for k in ("StudyInstanceUID", "SeriesInstanceUID"))
    count = max(1, int(min(header_number(header, "NumberOfFrames") or 1, 1 << 16)))  # a damaged count
    per_frame = own_value(header, "PerFrameFunctionalGroupsSequence") or []
    shared = (own_value(header, "SharedFunctionalGroupsSequence") or [None])[0]
    instance = header_number(header, "InstanceNumber")
    frames = []
    for index in range(count):
        groups = per_frame[index] if index < len(per_frame) else None
        position = _plane(header, groups, shared, "PlanePositionSequence", "ImagePositionPatient", 3)
        orientation = _plane(header, groups, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        frames.append(_Frame(relative, index if count > 1 else None, study, series, position, orientation,
                             None if instance is None else int(instance)))
    return frames


def _plane(header: Dataset, groups, shared, sequence: str, keyword: str, size: int) -> tuple[float, ...] | None:
    """Return a frame's position or orientation: its own functional group, the shared one, the file's."""
    for item in (groups, shared):
        inner = own_value(item, sequence) if item is not None else None
        if inner:
            return as_vector(own_value(inner[0], keyword), size)
    return as_vector(own_value(header, keyword), size)


def _studies(groups: dict, headers: dict, key: bytes) -> tuple[Study, ...]:
    by_study: dict[str, list[Series]] = {}
    for (study, series), frames in groups.items():
        built = _series(frames, headers[(study, series)], uid_key(study, key), uid_key(series, key))
        by_study.setdefault(study, []).append(built)
    studies = [Study(group[0].study_key, tuple(sorted(group, key=lambda s: (
        s.info.number is None, s.info.number or 0, _first_path(s))))) for group in by_study.values()]
    return tuple(sorted(studies, key=lambda study: min(_first_path(s) for s in study.series)))


def _first_path(series: Series) -> tuple:
    return min(_natural(s.path) for s in series.slices)


def _series(frames: list[_Frame], header: Dataset, study_key: str, key: str) -> Series:
    normal = next((n for n in (slice_normal(f.orientation) for f in frames if f.orientation) if n), None)
    positions = [round(sum(x * n for x, n in zip(f.position, normal)), 3) if normal and f.position else None
                 for f in frames]
    slices = order_slices(Slice(f.path, f.frame, p, f.instance) for f, p in zip(frames, positions))
    labels = {orientation_name(f.orientation) for f in frames if f.orientation}
    orientation = labels.pop() if len(labels) == 1 else "mixed" if labels else "unknown"
    spacing, spacing_from = _spacing(positions, header)
    number = header_number(header, "SeriesNumber")
    info = SeriesInfo(None if number is None else int(number), header_code(header, "Modality"),
                      header_code(header, "BodyPartExamined"), clean_description(header),
                      header_codes(header, "ImageType"), orientation, len(slices), spacing, spacing_from,
                      guess_sequence(header))
    return Series(study_key, key, slices, info)


def _spacing(positions: list[float | None], header: Dataset) -> tuple[float | None, str | None]:
    """Return the median gap between distinct slice positions, else the header's own spacing."""
    if (gap := slice_spacing(positions)) is not None:
        return gap, "positions"
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = header_number(header, keyword)
        if value and value > 0:
            return value, keyword
    return None, None


def _tag_reason(info: SeriesInfo, rules: Rules) -> str | None:
    if info.modality and info.modality not in rules.modalities:
        return f"skipped: not {' or '.join(sorted(rules.modalities))} (Modality {info.modality})"
    localizer = next((t for t in info.image_type if t in ("LOCALIZER", "SCOUT")), None)
    if localizer:
        return f"skipped: a localizer (ImageType {localizer})"
    word = _LOCALIZER_WORDS.search((info.description or "").upper())
    if word:
        return f"skipped: a localizer (SeriesDescription mentions {word.group(0)})"
    if info.body_part and info.body_part not in rules.body_parts:
        return f"skipped: not a brain series (BodyPartExamined {info.body_part})"
    if info.slice_count < rules.min_slices:
        return f"skipped: too few slices ({info.slice_count} < {rules.min_slices})"
    return None
