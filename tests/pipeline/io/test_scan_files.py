"""Files before pixels: which paths are scans, content hashes, and paths that are not readable files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.io.scans import (SCAN_SUFFIXES, ScanError, has_scan_name, is_scan_candidate, read_scan,
                               sha256_file)
from tests.builders.scans import make_dicom, write_bad_scans

GRAY = np.random.default_rng(7).integers(0, 256, (30, 40), dtype=np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_bad_scans(tmp_path_factory.mktemp("corpus"))


def saved(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def test_a_file_deleted_before_reading_is_reported_gone(tmp_path):
    path = saved(tmp_path / "gone.png", Image.fromarray(GRAY))
    path.unlink()
    with pytest.raises(ScanError, match="the file is gone"):
        read_scan(path)


def test_a_file_without_read_permission_is_refused():
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)  # anyone may look inside; only the file itself is locked
        path = saved(folder / "locked.png", Image.fromarray(GRAY))
        path.chmod(0)
        with as_unprivileged_user(), pytest.raises(ScanError) as error:
            read_scan(path)
    finally:
        shutil.rmtree(folder)
    assert str(error.value) == "cannot read the file: permission denied"


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(path)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome == ["not a file: the path is a named pipe"]


@pytest.mark.parametrize("name, expected", [
    ("a.jpg", True), ("b.JPEG", True), ("c.Tif", True), ("d.dicom", True), ("e.bmp", True),
    ("g.webp", True), ("h.JP2", True), ("i.j2k", True),
    ("f.gif", False), ("notes.txt", False), ("model.json", False), ("._a.jpg", False),
])
def test_scan_candidates_by_suffix(tmp_path, name, expected):
    assert is_scan_candidate(tmp_path / name) is expected


def test_scan_candidates_without_a_type_suffix_must_open_like_dicom(tmp_path):
    dicom = make_dicom(tmp_path / "x.dcm", GRAY, phi=False)
    unnamed = dicom.rename(tmp_path / "IM0001")
    uid_named = tmp_path / "1.2.840.113619.2.55.3"
    uid_named.write_bytes(unnamed.read_bytes())
    (tmp_path / "IM0002").write_bytes(unnamed.read_bytes()[128 + 4:])  # written without the preamble
    (tmp_path / "README").write_text("not a scan")
    (tmp_path / "1.2.3.4").write_bytes(b"\0" * 200)
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    found = {path.name for path in tmp_path.iterdir() if is_scan_candidate(path)}
    assert found == {"IM0001", "IM0002", "1.2.840.113619.2.55.3"}


def test_scan_suffixes_are_the_documented_ones():
    assert SCAN_SUFFIXES == {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".j2k",
                             ".jpx", ".dcm", ".dicom", ".nii"}
    assert has_scan_name("a/b/volume.NII.GZ") and not has_scan_name("notes.gz")


def test_sha256_file_matches_hashlib_over_several_chunks(tmp_path):
    path = tmp_path / "big.bin"
    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind, words", [("broken_link", "broken link"), ("directory", "folder"),
                                         ("unreadable", "permission denied" if os.geteuid() else "pipe")])
def test_sha256_file_refuses_what_is_not_a_readable_file(corpus, kind, words):
    with pytest.raises(ScanError, match=words):
        sha256_file(corpus.bad[kind])


def _error_of(path: Path) -> str:
    try:
        read_scan(path)
    except ScanError as error:
        return str(error)
    return "read without error"


@contextlib.contextmanager
def as_unprivileged_user():
    """Run a block as user nobody when the tests run as root (root reads files without permission)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
