"""Streaming enumeration of a job's folder, and labels from YES/NO folder names.

``walk(root)`` is a generator over ``os.scandir``: depth-first, by name within each folder (so the
order is deterministic), holding the listings of the folders on its current path, never the whole
archive. It stays inside the root: a symbolic link is followed only when its target resolves
inside the root, and a directory reached twice (a link loop, or a link to a folder already walked)
is entered once, by its (st_dev, st_ino). Hidden files and folders (a leading dot) and files that
are not scans are skipped, and so are outlines: mask images (``X_mask.png``) and NIfTI mask volumes
(``X_seg.nii.gz``, ``X_mask.nii``), which ``evaluate`` reads beside their scans
(``pipeline.data.annotations.is_outline_file``). A file named without a type (no suffix, or digits as in UID names) is
a scan when it opens like DICOM, with its preamble or without (``is_scan_candidate``, 132 bytes
read); an archive's README, notes and other files without a suffix are not.

Memory does not grow with the number of files. A listing longer than ``SPILL_NAMES`` is not held:
it is sorted in runs written to an unnamed temporary file (``tempfile.gettempdir()``, so TMPDIR)
and streamed through a merge, a few MiB for a folder of millions of files; the file goes when its
folder is done, when the walk is closed early or fails, and with the process if it dies. What
grows is the set of folders entered, about 130 bytes a folder (0.13 MiB for 1 000 folders, 13 MiB
for 100 000).

Entries with an ``error`` are recorded as failed scans carrying that message, so the report says
what was missed: a folder that cannot be read, a link that leads outside the root, a folder link
back to a folder that holds it (other links to folders already walked are skipped quietly). A
pipe, a broken link or a file link loop named like a scan is yielded as a scan; reading it fails
with the reader's explanation.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.data.annotations import is_outline_file
from pipeline.io.scans import has_scan_name, is_scan_candidate

log = logging.getLogger(__name__)

POSITIVE_FOLDERS = frozenset({"yes", "tumor", "tumour"})
NEGATIVE_FOLDERS = frozenset({"no", "no_tumor", "no_tumour", "notumor"})
OUTSIDE_LINK = "a link to outside the scanned folder; not followed"
LINK_LOOP = "a link loop: this link leads back to a folder that holds it; not followed"
LABEL_DEPTH = 2  # YES/NO at the top, or one level down (TRAIN/YES, brain_tumor_dataset/no, ...)
SPILL_NAMES = 20_000  # a listing longer than this is sorted in runs on disk (about 2 MiB held)
MERGE_FAN_IN = 64  # runs merged at once; more are first merged into longer runs
READ_BLOCK = 1 << 14  # bytes read from a run at a time: the merge holds one block per run


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
    stack: list[Generator[tuple[str, str] | Entry, None, None]] = [_listing(str(root), root)]
    try:
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
            elif isinstance(item, Entry):
                yield item
            else:
                yield from _visit(*item, root, visited, stack)
    finally:  # closed early or failed: the open listings drop their temporary files now
        for listing in reversed(stack):
            listing.close()


def _visit(path: str, kind: str, root: Path, visited: set[tuple[int, int]],
           stack: list) -> Iterator[Entry]:
    """Yield what one listed name gives (a scan, or a failure), or push its folder's listing."""
    if kind == LINK and not _inside(path, root):
        if os.path.isdir(path) or has_scan_name(path):  # never read it
            yield Entry(_relative(path, root), OUTSIDE_LINK)
    elif kind == FOLDER or (kind == LINK and os.path.isdir(path)):
        if _first_visit(path, visited):
            stack.append(_listing(path, root))
        elif kind == LINK and _is_loop(path):
            yield Entry(_relative(path, root), LINK_LOOP)
    elif is_scan_candidate(path) and not is_outline_file(os.path.basename(path)):
        # Not only regular files: a pipe or a broken link named like a scan is yielded so
        # that it fails with the reader's explanation instead of vanishing from the report.
        yield Entry(_relative(path, root))


# A folder's listing is kept as one string per name, "<name>\0<kind>", sorted: that orders by
# name (no name holds a NUL) and costs a fifth of the memory of os.DirEntry objects
# (benchmarks/bench_queue.py: a flat folder of 100 000 files). The kind is read from the listing
# itself (d_type), so plain files and folders need no extra system call.
FOLDER, LINK, OTHER = "d", "l", "f"


class SpillError(RuntimeError):
    """A long listing could not be written to the temporary folder (full, missing, read-only).

    Not an OSError on purpose: it says nothing about the walked folder, which must not be
    reported as unreadable (nor skipped as removed) because the temporary folder is full.
    """


def _kind(entry: os.DirEntry) -> str:
    try:
        if entry.is_symlink():
            return LINK
        return FOLDER if entry.is_dir(follow_symlinks=False) else OTHER
    except OSError:
        return OTHER


def _listing(folder: str, root: Path) -> Iterator[tuple[str, str] | Entry]:
    with _Runs() as runs:
        try:
            names = _sorted_names(folder, runs)
        except OSError as exc:
            if Path(folder) == root:
                raise
            if isinstance(exc, FileNotFoundError):
                return  # removed while we walked: nothing left to analyse or to report
            log.warning("cannot read folder %s: %s", folder, exc.strerror)
            yield Entry(_relative(folder, root), unreadable_folder_message(exc))
            return
        for key in names:
            name, _, kind = key.partition("\0")
            yield os.path.join(folder, name), kind


def _sorted_names(folder: str, runs: _Runs) -> Iterator[str]:
    """Read a whole listing (its first name in order may come last), then stream it in order."""
    names: list[str] = []
    with os.scandir(folder) as it:
        for entry in it:
            if not entry.name.startswith("."):
                names.append(f"{entry.name}\0{_kind(entry)}")
                if len(names) == SPILL_NAMES:
                    runs.spill(names)
    if runs:  # spilled already: what is left is one more run
        runs.spill(names)
        return runs.merged()
    names.sort(reverse=True)
    return _popped(names)


def _popped(names: list[str]) -> Iterator[str]:
    while names:  # sorted in reverse: popped from the end in name order, each freed as it goes
        yield names.pop()


class _Runs:
    """Sorted runs of one listing in one unnamed temporary file, opened at the first run.

    Records are the listing's strings as file-system bytes (``os.fsencode``, so undecodable names
    come back unchanged) each ended by "/", which no name holds; a run is read back a block at a
    time with ``os.pread`` at its own offset, so one file serves every run of the merge.
    """

    def __init__(self) -> None:
        self._file = None
        self._runs: list[tuple[int, int]] = []  # (start, end) byte offsets in the file

    def __enter__(self) -> _Runs:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()  # unnamed: closing it frees the disk space

    def __bool__(self) -> bool:
        return bool(self._runs)

    def spill(self, names: list[str]) -> None:
        """Write ``names`` as one sorted run and empty the list."""
        names.sort()
        self._write(names)
        names.clear()

    def merged(self) -> Iterator[str]:
        """Return every run's strings in one sorted stream."""
        while len(self._runs) > MERGE_FAN_IN:
            first, self._runs = self._runs[:MERGE_FAN_IN], self._runs[MERGE_FAN_IN:]
            self._write(heapq.merge(*map(self._read, first)))
        return heapq.merge(*map(self._read, self._runs))

    def _write(self, keys: Iterable[str]) -> None:
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="tumorlens-walk-")
            start = self._file.seek(0, os.SEEK_END)
            self._file.writelines(os.fsencode(key) + b"/" for key in keys)
            self._file.flush()  # _read goes around the buffer
        except OSError as exc:
            raise SpillError(f"cannot write a long folder listing to the temporary folder "
                             f"{tempfile.gettempdir()}: {exc}") from exc
        if self._file.tell() > start:
            self._runs.append((start, self._file.tell()))

    def _read(self, run: tuple[int, int]) -> Iterator[str]:
        start, end = run
        rest = b""
        while start < end:
            block = os.pread(self._file.fileno(), min(READ_BLOCK, end - start), start)
            if not block:
                raise SpillError("a long folder listing's temporary file was cut short")
            start += len(block)
            *records, rest = (rest + block).split(b"/")
            yield from map(os.fsdecode, records)


def unreadable_folder_message(exc: OSError) -> str:
    """Explain in words why a folder's scans were not analysed."""
    reason = {errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(
        exc.errno, (exc.strerror or str(exc)).lower())
    return f"this folder could not be read ({reason}); the scans inside it were not analysed"


def _first_visit(path: str, visited: set[tuple[int, int]]) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    key = (info.st_dev, info.st_ino)
    if key in visited:
        return False  # a link loop, or a folder already walked through another link
    visited.add(key)
    return True


def _is_loop(path: str) -> bool:
    """Tell whether a folder link leads back to a folder that holds it (an endless path)."""
    return Path(os.path.dirname(path)).resolve().is_relative_to(os.path.realpath(path))


def _inside(path: str, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root)


def _relative(path: str | Path, root: Path) -> str:
    path, prefix = os.fspath(path), os.path.join(root, "")
    if path.startswith(prefix) and os.sep == "/":  # every walked path is built by joining onto root
        return path[len(prefix):]
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
    try:  # the listing's d_type tells folders apart: a folder of a million files is not stat-ed
        with os.scandir(root) as it:
            children = [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir()]
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
