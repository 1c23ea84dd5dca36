"""Streaming enumeration of a job's folder: order, links, loops, hidden and unreadable entries."""

from __future__ import annotations

import contextlib
import errno
import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT
from worker import walk as walk_module
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


def test_mask_images_and_volumes_are_outlines_not_scans(tmp_path):
    touch(tmp_path, "p1/p1_flair.nii.gz", "p1/p1_seg.nii.gz", "p2/brain.nii", "p2/brain_mask.nii",
          "p3/case-t2f.nii.gz", "p3/case-seg.nii.gz", "p4/segment.nii.gz",
          "p5/TCGA_1_12.tif", "p5/TCGA_1_12_mask.png", "p5/mask.png")
    assert paths(tmp_path) == ["p1/p1_flair.nii.gz", "p2/brain.nii", "p3/case-t2f.nii.gz",
                               "p4/segment.nii.gz", "p5/TCGA_1_12.tif", "p5/mask.png"]


def test_unnamed_dicom_written_without_its_preamble_is_found_and_look_alikes_are_not(tmp_path):
    explicit = b"\x02\x00\x00\x00UL\x04\x00" + bytes(40)  # (0002,0000) UL: file meta, no preamble
    implicit = b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100" + bytes(40)  # (0008,0005), implicit VR
    touch(tmp_path, "a/IM0001", "a/1.2.3.17", data=explicit)
    touch(tmp_path, "a/IM0002", data=implicit)
    touch(tmp_path, "a/junk", data=b"\x08\x00" + b"\xff" * 40)  # group 0008, then no VR, a huge length
    touch(tmp_path, "a/short", data=b"\x08\x00\x05")
    touch(tmp_path, "a/notes.txt", data=explicit)  # a type suffix that is not a scan's: never opened
    os.mkfifo(tmp_path / "a" / "fifo")  # would block a reader: must not be opened
    assert paths(tmp_path) == ["a/1.2.3.17", "a/IM0001", "a/IM0002"]


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


# Names whose order needs care: unicode (composed and not), astral, spaces, a newline, case,
# digits, and undecodable bytes (surrogate escapes: str order, what the walk uses, puts b"\xff"
# before U+FFFD; byte order puts it after).
AWKWARD = ["a", "a b", "a-b", "a.b", "A", "Z", "_", " lead", "trail ", "é", "e\u0301", "ß", "中文",
           "🧠", "\ufffd", "new\nline", "tab\there", "9", "10", *map(os.fsdecode, [b"\xff", b"\xe9t\xe9"]),
           *(os.fsdecode(bytes([0x80 + i])) for i in range(40)), *(chr(0x1F300 + i) for i in range(40))]


def awkward_folder(root: Path, count: int = 200) -> list[str]:
    """Write ``count`` numbered scans, the awkward names as scans and as folders, and links."""
    touch(root, *(f"img {i:03d}.png" for i in range(count)), *(f"{n}.png" for n in AWKWARD),
          *(f"{n}/x.png" for n in AWKWARD[::3]), *(f"big/{i}.png" for i in range(30)), ".hidden.png")
    (root / "again").symlink_to(root / "a")  # a folder already walked: skipped quietly
    (root / "loop").symlink_to(".")
    (root / "out").symlink_to("/")
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def spill_files(spill: Path) -> list[str]:
    """Return the files this process holds open in ``spill`` (unnamed ones too), and any left there."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return [t for t in targets if t.startswith(f"{spill}/")] + [p.name for p in spill.iterdir()]


@pytest.fixture
def spill(tmp_path, monkeypatch) -> Iterator[Path]:
    """Spill every listing over 7 names, merge 3 runs at a time, read runs 5 bytes at a time."""
    folder = tmp_path / "spill"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    for name, value in {"SPILL_NAMES": 7, "MERGE_FAN_IN": 3, "READ_BLOCK": 5}.items():
        monkeypatch.setattr(walk_module, name, value)
    gc.collect()  # what earlier tests in this process left unclosed is not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield folder
        gc.collect()
    unclosed = [str(w.message) for w in caught if w.category is ResourceWarning]
    assert unclosed == []  # every spill file closed


def test_a_spilled_listing_comes_in_the_same_order_as_one_held_in_memory(tmp_path, spill, monkeypatch):
    root = tmp_path / "root"
    names = awkward_folder(root)
    assert sorted(names) != sorted(names, key=os.fsencode)  # these names tell the orders apart
    entries = walk(root)
    spilled = [next(entries)]
    assert spill_files(spill)  # this walk does spill
    spilled += entries
    monkeypatch.setattr(walk_module, "SPILL_NAMES", 1_000_000)
    held = list(walk(root))
    assert spilled == held
    assert list(dict.fromkeys(e.path.split("/")[0] for e in held)) == [n for n in names if n != "again"]
    assert [e.path for e in held if e.path.startswith("big/")] == sorted(f"big/{i}.png" for i in range(30))
    assert Entry("loop", LINK_LOOP) in held and Entry("out", OUTSIDE_LINK) in held


def test_spill_files_go_after_a_full_walk_and_when_the_walk_is_closed_early(tmp_path, spill):
    root = tmp_path / "root"
    touch(root, *(f"{i:02d}.png" for i in range(20)), *(f"sub/{i:02d}.png" for i in range(20)))
    assert len(list(walk(root))) == 40
    assert spill_files(spill) == []
    entries = walk(root)
    assert [next(entries) for _ in range(22)][-1] == Entry("sub/01.png")
    assert len(spill_files(spill)) == 2  # the root's listing and sub's, both spilled
    entries.close()
    assert spill_files(spill) == []


def test_a_walk_that_fails_drops_its_spill_files_at_once(tmp_path, spill, monkeypatch):
    touch(tmp_path / "root", *(f"{i:02d}.png" for i in range(20)), *(f"sub/{i:02d}.png" for i in range(20)))
    real_scandir = os.scandir

    def stopped_scandir(path):  # as Celery's soft time limit does, in whatever the walk runs
        if os.path.basename(path) == "sub":
            raise RuntimeError("out of time")
        return real_scandir(path)

    monkeypatch.setattr(walk_module.os, "scandir", stopped_scandir)
    with pytest.raises(RuntimeError, match="out of time") as caught:
        list(walk(tmp_path / "root"))
    assert caught.traceback  # which keeps the walk's frame, and what it held, alive
    assert spill_files(spill) == []


def test_a_folder_failing_while_it_spills_is_reported_and_its_spill_file_goes(tmp_path, spill,
                                                                              monkeypatch):
    touch(tmp_path / "root", "a.png", *(f"bad/{i:02d}.png" for i in range(20)), "c.png")
    real_scandir = os.scandir

    def failing_scandir(path):
        listing = real_scandir(path)
        if os.path.basename(path) != "bad":
            return listing

        def entries():
            with listing:
                for i, entry in enumerate(listing):
                    if i == 15:  # two runs spilled by now
                        assert len(spill_files(spill)) == 1
                        raise OSError(errno.EIO, "Input/output error")
                    yield entry
        return contextlib.closing(entries())

    monkeypatch.setattr(walk_module.os, "scandir", failing_scandir)
    found = list(walk(tmp_path / "root"))
    assert [e.path for e in found] == ["a.png", "bad", "c.png"]
    assert found[0].error is None and "(input/output error)" in found[1].error
    assert spill_files(spill) == []


def test_a_temporary_folder_that_cannot_be_written_is_not_taken_for_a_missing_folder(tmp_path, spill,
                                                                                     monkeypatch):
    touch(tmp_path / "root", "a.png", *(f"big/{i:02d}.png" for i in range(20)))
    monkeypatch.setattr(tempfile, "tempdir", str(spill / "gone"))
    entries = walk(tmp_path / "root")
    assert next(entries) == Entry("a.png")
    with pytest.raises(walk_module.SpillError, match="temporary folder"):
        next(entries)  # not skipped as if "big" had been removed, nor reported unreadable
