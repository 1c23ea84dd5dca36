"""Streaming enumeration of a job's folder: order, links, loops, hidden and unreadable entries."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from worker.walk import LINK_LOOP, OUTSIDE_LINK, Entry, folder_labels, path_label, walk

DICOM_HEAD = bytes(128) + b"DICM"


def touch(root: Path, *names: str, data: bytes = b"x") -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def paths(root: Path) -> list[str]:
    return [entry.path for entry in walk(root)]


def test_walk_is_a_lazy_generator_in_sorted_order(tmp_path):
    touch(tmp_path, "b/2.png", "b/10.png", "a.jpg", "c/d/e.dcm", "B.bmp", "a/z.tif")
    assert inspect.isgenerator(walk(tmp_path))
    assert paths(tmp_path) == ["B.bmp", "a/z.tif", "a.jpg", "b/10.png", "b/2.png", "c/d/e.dcm"]


def test_hidden_and_non_scan_files_are_ignored_but_unnamed_dicom_is_found(tmp_path):
    touch(tmp_path, ".hidden.png", ".git/x.png", "notes.txt", "report.pdf", "scan.PNG")
    touch(tmp_path, "series/1.2.840.113619.2.55", "series/README", data=DICOM_HEAD)
    (tmp_path / "series" / "README").write_text("not dicom")
    assert paths(tmp_path) == ["scan.PNG", "series/1.2.840.113619.2.55"]


def test_links_leading_outside_the_root_are_reported_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    touch(outside, "secret.png", "dir/also.png", "unnamed", data=DICOM_HEAD)
    touch(root, "in.png")
    (root / "to_file.png").symlink_to(outside / "secret.png")
    (root / "to_dir").symlink_to(outside / "dir")
    (root / "escape").symlink_to("../outside")
    (root / "unnamed_link").symlink_to(outside / "unnamed")  # no suffix: not even peeked at
    assert list(walk(root)) == [Entry("escape", OUTSIDE_LINK), Entry("in.png"),
                                Entry("to_dir", OUTSIDE_LINK), Entry("to_file.png", OUTSIDE_LINK)]


def test_non_files_named_like_scans_are_yielded_for_the_reader_to_explain(tmp_path):
    touch(tmp_path, "ok.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "broken.png").symlink_to("gone.png")
    (tmp_path / "self.png").symlink_to("self.png")
    (tmp_path / "series.jpg").mkdir()
    assert paths(tmp_path) == ["broken.png", "ok.png", "pipe.jpg", "self.png"]


def test_links_inside_the_root_are_followed_once_and_loops_end(tmp_path):
    touch(tmp_path, "a/x.png", "b/y.png")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a/loop -> root: a cycle
    (tmp_path / "c").symlink_to(tmp_path / "b")  # a second way into b
    (tmp_path / "b" / "self").symlink_to(".")
    assert list(walk(tmp_path)) == [Entry("a/loop", LINK_LOOP), Entry("a/x.png"),
                                    Entry("b/self", LINK_LOOP), Entry("b/y.png")]


def test_root_given_through_a_link_is_resolved(tmp_path):
    touch(tmp_path, "real/x.png")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert paths(tmp_path / "alias") == ["x.png"]


def test_a_folder_removed_during_the_walk_is_skipped(tmp_path):
    touch(tmp_path, "a/1.png", "b/2.png", "c/3.png")
    entries = walk(tmp_path)
    first = next(entries)
    shutil.rmtree(tmp_path / "b")
    rest = list(entries)
    assert first == Entry("a/1.png")
    assert rest == [Entry("c/3.png")]


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(walk(tmp_path / "nope"))


UNREADABLE_SCRIPT = """
import json, sys
from worker.walk import walk
print(json.dumps([[e.path, e.error] for e in walk(sys.argv[1])]))
"""


@pytest.fixture
def shared_tmp():
    """A temporary folder other users can reach (pytest's own are private to this user)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        folder.chmod(0o755)
        yield folder
        for path in folder.rglob("*"):
            path.chmod(0o755)


def test_unreadable_folder_becomes_an_entry_with_a_reason(shared_tmp):
    touch(shared_tmp, "open/1.png", "locked/2.png")
    (shared_tmp / "locked").chmod(0)
    command = [sys.executable, "-c", UNREADABLE_SCRIPT, str(shared_tmp)]
    if os.geteuid() == 0:  # root reads everything: walk as an ordinary user instead
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a folder unreadable")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert entries[0][0] == "locked" and "permission denied" in entries[0][1]
    assert entries[1] == ["open/1.png", None]


@pytest.mark.parametrize("folders, expected", [
    (["YES", "NO"], True),
    (["yes", "no", "pred"], True),
    (["TRAIN/YES", "TRAIN/NO", "TEST/yes", "TEST/no"], True),
    (["brain_tumor_dataset/yes", "brain_tumor_dataset/no"], True),
    (["tumor", "no_tumor"], True),
    (["yes"], False),
    (["patients/p1", "patients/p2"], False),
    (["a/b/yes", "a/b/no"], False),  # deeper than the layouts people use for labels
])
def test_folder_labels_detects_yes_no_layouts(tmp_path, folders, expected):
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    assert folder_labels(tmp_path) is expected


@pytest.mark.parametrize("path, label", [
    ("yes/y1.jpg", 1), ("NO/n1.jpg", 0), ("TRAIN/Yes/y.png", 1), ("test/no/x.png", 0),
    ("pred/p.jpg", None), ("y1.jpg", None), ("a/b/yes/x.png", None), ("yes.png", None),
])
def test_path_label_comes_from_the_top_folders(path, label):
    assert path_label(path) == label
