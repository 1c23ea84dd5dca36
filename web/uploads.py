"""Accept uploaded scans (single files or zip archives) into a fresh folder under the uploads root.

Every limit is checked before or while bytes are written, a zip is vetted entry by entry before
anything is extracted, and a refused upload leaves no folder behind.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable

from werkzeug.datastructures import FileStorage

from pipeline.io.scans import is_scan_candidate

CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that is refused; the message is meant for a person."""


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int = 200 << 20  # one scan (a large multi-frame DICOM fits)
    max_total_bytes: int = 4 << 30  # everything written for one upload, zips uncompressed
    max_entries: int = 20_000  # entries in one zip


@dataclass
class UploadResult:
    folder: Path
    kept: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class _Budget:
    limits: UploadLimits
    used: int = 0

    def copy(self, source: BinaryIO, target: Path, label: str) -> None:
        """Copy ``source`` to ``target``, refusing once a per-file or total limit is passed."""
        written = 0
        with target.open("xb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                self.used += len(chunk)
                if written > self.limits.max_file_bytes:
                    raise UploadError(f"{label} is larger than the {_mb(self.limits.max_file_bytes)} "
                                      "allowed for one scan.")
                if self.used > self.limits.max_total_bytes:
                    raise UploadError(f"The upload is larger than the {_mb(self.limits.max_total_bytes)} "
                                      "allowed in total.")
                out.write(chunk)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB"


def new_folder(uploads_root: Path) -> Path:
    """Create and return a new, uniquely named folder for one upload."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = uploads_root / f"{stamp}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def store_uploads(files: Iterable[FileStorage], uploads_root: Path,
                  limits: UploadLimits = UploadLimits()) -> UploadResult:
    """Write the scans among ``files`` into a new folder under ``uploads_root``.

    Raises:
        UploadError: a limit was passed, a zip was unsafe or unreadable, or no scan was found;
            the new folder is removed again.
    """
    result = UploadResult(new_folder(uploads_root))
    budget = _Budget(limits)
    try:
        for upload in files:
            _store_one(upload, result, budget)
        if result.kept == 0:
            raise UploadError("No scan files were found in the upload (expected JPEG, PNG, BMP, "
                              "TIFF, WebP, JPEG 2000, DICOM or NIfTI files, or a zip holding them).")
    except BaseException:
        shutil.rmtree(result.folder, ignore_errors=True)
        raise
    return result


def _store_one(upload: FileStorage, result: UploadResult, budget: _Budget) -> None:
    name = client_name(upload.filename or "")
    if not name:
        return
    if name.lower().endswith(".zip"):
        _extract_zip(upload.stream, name, result, budget)
    else:
        _keep(upload.stream, result.folder, PurePosixPath(name), result, budget)


def client_name(filename: str) -> str:
    """Return the last component of a client-side file name ('' when nothing usable is left)."""
    name = re.split(r"[/\\]", filename.replace("\x00", ""))[-1].strip()
    return "" if name in ("", ".", "..") else name


def _keep(source: BinaryIO, folder: Path, rel: PurePosixPath, result: UploadResult,
          budget: _Budget) -> None:
    """Save one file if it looks like a scan (by name, or by content when unnamed), else skip it."""
    target = _free_name(folder / rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    budget.copy(source, target, rel.as_posix())
    if is_scan_candidate(target):
        result.kept += 1
    else:
        target.unlink()
        result.skipped.append(rel.as_posix())


def _free_name(target: Path) -> Path:
    """Return ``target`` or, when taken, the same name with a counter before the suffix."""
    n = 1
    candidate = target
    # "scan.nii.gz" becomes "scan-1.nii.gz", still a volume by its name, not "scan.nii-1.gz"
    suffix = ".nii.gz" if target.name.lower().endswith(".nii.gz") else target.suffix
    stem = target.name[:len(target.name) - len(suffix)] if suffix else target.name
    while candidate.exists():
        candidate = target.with_name(f"{stem}-{n}{suffix}")
        n += 1
    return candidate


def member_path(name: str, archive: str) -> PurePosixPath:
    """Return a zip member's path if it stays inside the archive's folder, else raise UploadError."""
    parts = re.split(r"[/\\]", name)
    if "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) \
            or ".." in parts:
        raise UploadError(f"{archive} holds an entry that points outside its folder ({name!r}); "
                          "nothing from the upload was kept.")
    return PurePosixPath(*[p for p in parts if p not in ("", ".")])


def _extract_zip(stream: BinaryIO, archive: str, result: UploadResult, budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(stream) as zf:
            members = _vet_members(zf, archive, budget.limits)
            base = result.folder / _free_name(result.folder / Path(archive).stem).name
            for info, rel in members:
                with zf.open(info) as source:
                    _keep(source, base, rel, result, budget)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{archive} is not a readable zip archive ({exc}).") from exc


def _vet_members(zf: zipfile.ZipFile, archive: str,
                 limits: UploadLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Check every entry of a zip before extracting any, and return the files worth extracting."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise UploadError(f"{archive} holds {len(infos)} entries; at most {limits.max_entries} "
                          "are accepted.")
    paths = [member_path(info.filename, archive) for info in infos]
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_total_bytes:
        raise UploadError(f"{archive} unpacks to {_mb(declared)}, more than the "
                          f"{_mb(limits.max_total_bytes)} allowed.")
    return [(info, rel) for info, rel in zip(infos, paths)
            if not info.is_dir() and rel.parts and not _hidden(rel)]


def _hidden(rel: PurePosixPath) -> bool:
    """Tell whether a path is dot-file or archive-tool noise (``__MACOSX``, ``.DS_Store``)."""
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.parts)
