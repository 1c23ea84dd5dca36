"""Streaming enumeration of a job's folder, and labels from YES/NO folder names.

``walk(root)`` is a generator over ``os.scandir``: it holds one directory listing at a time (sorted,
so the order is deterministic), never the whole archive. It stays inside the root: a symbolic link
is followed only when its target resolves inside the root, and a directory reached twice (a link
loop, or a link to a folder already walked) is entered once, by its (st_dev, st_ino). Hidden files
and folders (a leading dot) and files that are not scans are skipped.

Entries with an ``error`` are recorded as failed scans carrying that message, so the report says
what was missed: a folder that cannot be read, a link that leads outside the root, a folder link
back to a folder that holds it (other links to folders already walked are skipped quietly). A
pipe, a broken link or a file link loop named like a scan is yielded as a scan; reading it fails
with the reader's explanation.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.scans import SCAN_SUFFIXES, is_scan_candidate

log = logging.getLogger(__name__)

POSITIVE_FOLDERS = frozenset({"yes", "tumor", "tumour"})
NEGATIVE_FOLDERS = frozenset({"no", "no_tumor", "no_tumour", "notumor"})
OUTSIDE_LINK = "a link to outside the scanned folder; not followed"
LINK_LOOP = "a link loop: this link leads back to a folder that holds it; not followed"
LABEL_DEPTH = 2  # YES/NO at the top, or one level down (TRAIN/YES, brain_tumor_dataset/no, ...)


@dataclass(frozen=True)
class Entry:
    """A scan to read (``error`` None) or something recorded as failed with ``error``."""

    path: str
    error: str | None = None


def walk(root: str | os.PathLike) -> Iterator[Entry]:
    """Yield the scans under ``root`` in a deterministic order, relative POSIX paths."""
    root = Path(root).resolve()
    top = os.stat(root)
    visited = {(top.st_dev, top.st_ino)}
    stack: list[Iterator[os.DirEntry | Entry]] = [_listing(root, root)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Entry):
            yield item
        elif item.is_symlink() and not _inside(item.path, root):
            if _is_dir(item) or Path(item.name).suffix.lower() in SCAN_SUFFIXES:  # never read it
                yield Entry(_relative(item.path, root), OUTSIDE_LINK)
        elif _is_dir(item):
            if _first_visit(item, visited):
                stack.append(_listing(Path(item.path), root))
            elif item.is_symlink() and _is_loop(item):
                yield Entry(_relative(item.path, root), LINK_LOOP)
        elif is_scan_candidate(item.path):
            # Not only regular files: a pipe or a broken link named like a scan is yielded so
            # that it fails with the reader's explanation instead of vanishing from the report.
            yield Entry(_relative(item.path, root))


def _listing(folder: Path, root: Path) -> Iterator[os.DirEntry | Entry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        if folder == root:
            raise
        if isinstance(exc, FileNotFoundError):
            return  # removed while we walked: nothing left to analyse or to report
        log.warning("cannot read folder %s: %s", folder, exc.strerror)
        yield Entry(_relative(folder, root), unreadable_folder_message(exc))
        return
    yield from entries


def unreadable_folder_message(exc: OSError) -> str:
    """Explain in words why a folder's scans were not analysed."""
    reason = {errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(
        exc.errno, (exc.strerror or str(exc)).lower())
    return f"this folder could not be read ({reason}); the scans inside it were not analysed"


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; _enter checks where they lead
    except OSError:
        return False


def _first_visit(entry: os.DirEntry, visited: set[tuple[int, int]]) -> bool:
    try:
        info = entry.stat()
    except OSError:
        return False
    key = (info.st_dev, info.st_ino)
    if key in visited:
        return False  # a link loop, or a folder already walked through another link
    visited.add(key)
    return True


def _is_loop(entry: os.DirEntry) -> bool:
    """Tell whether a folder link leads back to a folder that holds it (an endless path)."""
    return Path(os.path.dirname(entry.path)).resolve().is_relative_to(os.path.realpath(entry.path))


def _inside(path: str, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _relative(path: str | Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def folder_labels(root: str | os.PathLike) -> bool:
    """Tell whether ``root`` is laid out in YES/NO folders (labels come from folder names)."""
    seen = set()
    for folder in _folders(Path(root), LABEL_DEPTH):
        seen.add(_folder_label(folder.name))
        if {0, 1} <= seen:
            return True
    return False


def _folders(root: Path, depth: int) -> Iterator[Path]:
    try:
        children = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return
    for child in children:
        yield child
        if depth > 1:
            yield from _folders(child, depth - 1)


def _folder_label(name: str) -> int | None:
    name = name.lower()
    if name in POSITIVE_FOLDERS:
        return 1
    if name in NEGATIVE_FOLDERS:
        return 0
    return None


def path_label(path: str) -> int | None:
    """Return 1/0 from the first YES/NO folder among a relative path's top folders, else None."""
    for part in PurePosixPath(path).parts[:-1][:LABEL_DEPTH]:
        label = _folder_label(part)
        if label is not None:
            return label
    return None
