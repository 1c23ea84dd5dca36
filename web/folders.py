"""Browse the configured scan roots without ever leaving them.

A folder is named by the index of its root in ``TUMORLENS_SCAN_ROOTS`` and a path relative to that
root. The relative path is checked twice: as text (no ``..``, no absolute or Windows-style paths, no
leftover URL encoding, no NUL) and, after resolving symlinks, as a place (still inside the root).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.io.scans import is_scan_candidate

# A listing stops counting here so one huge folder cannot stall the page.
COUNT_CAP = 10_000
_ENCODED = re.compile(r"%[0-9a-fA-F]{2}")


class FolderError(ValueError):
    """A folder request that is refused; the message is meant for a person."""


class OutsideBase(ValueError):
    """A path that resolves to a place outside the folder it must stay in."""


def resolve_inside(base: Path, rel: str | os.PathLike) -> Path:
    """Return ``base / rel`` with every link resolved, refusing a place outside ``base``.

    Raises:
        OutsideBase: the resolved path lies outside ``base``.
        OSError: the path cannot be resolved (a link loop, an unreadable folder).
    """
    try:
        base = base.resolve()
        path = (base / rel).resolve()
    except RuntimeError as exc:  # Path.resolve reports a symlink loop this way
        raise OSError(f"a link loop under {base}") from exc
    if not path.is_relative_to(base):
        raise OutsideBase(str(rel))
    return path


@dataclass(frozen=True)
class Entry:
    name: str
    path: str  # relative to the root, POSIX separators
    scans: int  # scan files directly inside, capped at COUNT_CAP


@dataclass(frozen=True)
class Listing:
    root: int
    root_path: Path
    path: str
    parent: str | None
    scans: int
    folders: list[Entry]


def check_relative(rel: str) -> PurePosixPath:
    """Return ``rel`` as a clean relative path, or raise FolderError for anything that could escape."""
    if "\x00" in rel:
        raise FolderError("The folder name contains a NUL byte.")
    if "\\" in rel:
        raise FolderError("Use forward slashes in folder paths.")
    if _ENCODED.search(rel):
        raise FolderError("The folder path is URL-encoded twice; send it decoded once.")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise FolderError("Give the folder relative to its scan root, not as an absolute path.")
    parts = [p for p in rel.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise FolderError("Folder paths may not contain '.' or '..'.")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def resolve(roots: list[Path], index: int, rel: str) -> tuple[Path, Path]:
    """Return (root, folder) for a root index and relative path, both fully resolved.

    Raises:
        FolderError: the root does not exist or the folder is missing or lies outside its root.
    """
    if not 0 <= index < len(roots):
        raise FolderError("That scan root does not exist.")
    root = roots[index].resolve()
    relative = check_relative(rel)
    try:
        folder = resolve_inside(root, relative)
    except OutsideBase as exc:
        raise FolderError("That folder lies outside the scan root.") from exc
    except OSError as exc:
        raise FolderError("That folder cannot be opened (a link loop or an unreadable path).") from exc
    if not folder.is_dir():
        raise FolderError("That folder does not exist.")
    return root, folder


def count_scans(folder: Path) -> int:
    """Count scan files directly inside ``folder``, stopping at COUNT_CAP."""
    count = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and is_scan_candidate(entry.path):
                    count += 1
                    if count >= COUNT_CAP:
                        break
    except OSError:
        return 0
    return count


def _subfolders(root: Path, folder: Path) -> list[Path]:
    """Return the sub-folders of ``folder`` that resolve inside ``root``, sorted by name."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                target = Path(entry.path).resolve()
                if target.is_relative_to(root):
                    found.append(Path(entry.path))
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name.lower())


def list_folder(roots: list[Path], index: int, rel: str) -> Listing:
    """List one folder of a scan root: its scan count and its sub-folders with theirs."""
    root, folder = resolve(roots, index, rel)
    clean = folder.relative_to(root).as_posix()
    clean = "" if clean == "." else clean
    entries = [Entry(sub.name, _join(clean, sub.name), count_scans(sub))
               for sub in _subfolders(root, folder)]
    parent = None if not clean else clean.rpartition("/")[0]
    return Listing(index, root, clean, parent, count_scans(folder), entries)


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name
