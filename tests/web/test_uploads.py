"""Uploads: scans kept, everything else skipped, unsafe or oversized zips refused without a trace."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from werkzeug.datastructures import FileStorage

from tests.web.seed import png, zip_of
from web.uploads import UploadError, UploadLimits, client_name, member_path, store_uploads


def upload(name: str, data: bytes) -> FileStorage:
    return FileStorage(io.BytesIO(data), filename=name)


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_single_files_keep_scans_and_skip_the_rest(tmp_path):
    result = store_uploads([upload("a.png", png()), upload("../../b.png", png()),
                            upload("notes.txt", b"hello"), upload("c.png", png())], tmp_path)
    assert result.kept == 3 and result.skipped == ["notes.txt"]
    assert files_under(result.folder) == ["a.png", "b.png", "c.png"]
    assert result.folder.parent == tmp_path


def test_same_name_twice_is_kept_twice(tmp_path):
    result = store_uploads([upload("a.png", png()), upload("a.png", png())], tmp_path)
    assert files_under(result.folder) == ["a-1.png", "a.png"]


def test_a_volume_named_twice_keeps_its_double_suffix(tmp_path):
    result = store_uploads([upload("head.nii.gz", b"v1"), upload("head.nii.gz", b"v2")], tmp_path)
    assert files_under(result.folder) == ["head-1.nii.gz", "head.nii.gz"]  # both still volumes


def test_zip_keeps_its_folders_and_only_scans(tmp_path):
    data = zip_of({"YES/y1.png": png(), "NO/n1.png": png(), "NO/readme.txt": b"x",
                   "__MACOSX/YES/._y1.png": b"junk", ".DS_Store": b"junk"})
    result = store_uploads([upload("study.zip", data)], tmp_path)
    assert files_under(result.folder) == ["study/NO/n1.png", "study/YES/y1.png"]
    assert result.kept == 2


@pytest.mark.parametrize("evil", ["../evil.png", "YES/../../evil.png", "/abs/evil.png",
                                  "..\\evil.png", "C:/evil.png", "\\\\server\\evil.png"])
def test_zip_slip_entries_refuse_the_whole_upload(tmp_path, evil):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    data = zip_of({"YES/good.png": png(), evil: png()})
    with pytest.raises(UploadError, match="points outside its folder"):
        store_uploads([upload("a.png", png()), upload("study.zip", data)], uploads)
    assert list(uploads.iterdir()) == []  # nothing kept, not even the plain file before the zip
    assert not (tmp_path / "evil.png").exists()


def test_limits_per_file_total_and_entries(tmp_path):
    big = png() + b"\0" * 5000
    with pytest.raises(UploadError, match="allowed for one scan"):
        store_uploads([upload("big.png", big)], tmp_path, UploadLimits(max_file_bytes=4000))
    with pytest.raises(UploadError, match="allowed in total"):
        store_uploads([upload("a.png", big), upload("b.png", big)], tmp_path,
                      UploadLimits(max_total_bytes=8000))
    bomb = zip_of({f"x{i}.png": b"\0" * 100_000 for i in range(5)})  # compresses to almost nothing
    with pytest.raises(UploadError, match="unpacks to"):
        store_uploads([upload("bomb.zip", bomb)], tmp_path, UploadLimits(max_total_bytes=200_000))
    many = zip_of({f"x{i}.png": png() for i in range(6)})
    with pytest.raises(UploadError, match="holds 6 entries"):
        store_uploads([upload("many.zip", many)], tmp_path, UploadLimits(max_entries=5))
    assert list(tmp_path.iterdir()) == []


def test_unreadable_zip_and_empty_upload(tmp_path):
    with pytest.raises(UploadError, match="not a readable zip"):
        store_uploads([upload("broken.zip", b"PK\x03\x04 not really")], tmp_path)
    with pytest.raises(UploadError, match="No scan files"):
        store_uploads([upload("notes.txt", b"x")], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_names_from_clients():
    assert client_name("C:\\Users\\x\\scan.png") == "scan.png"
    assert client_name("../..") == ""
    assert client_name("a\x00b.png") == "ab.png"
    assert member_path("YES/./a.png", "z.zip").as_posix() == "YES/a.png"


def test_upload_page_refuses_a_zip_slip_and_keeps_nothing(signed_in, app, folders):
    from tests.web.conftest import csrf_token

    app.config["BROKER_URL"] = "redis://127.0.0.1:1/0"  # past the broker check; never reached
    token = csrf_token(signed_in.get("/jobs/new").get_data(as_text=True))
    data = {"csrf_token": token, "model": "default", "method": "gradcam",
            "scans": (io.BytesIO(zip_of({"../evil.png": png()})), "evil.zip")}
    response = signed_in.post("/jobs/upload", data=data, content_type="multipart/form-data",
                              follow_redirects=True)
    assert "points outside its folder" in response.get_data(as_text=True)
    assert list(folders["uploads"].iterdir()) == []


def test_upload_without_broker_is_refused_before_writing(signed_in, folders):
    from tests.web.conftest import csrf_token

    token = csrf_token(signed_in.get("/jobs/new").get_data(as_text=True))
    data = {"csrf_token": token, "model": "default", "method": "gradcam",
            "scans": (io.BytesIO(png()), "a.png")}
    response = signed_in.post("/jobs/upload", data=data, content_type="multipart/form-data",
                              follow_redirects=True)
    assert "No task queue is configured" in response.get_data(as_text=True)
    assert list(folders["uploads"].iterdir()) == []


def test_request_larger_than_the_limit_is_refused_in_words(make_app, user_id):
    from tests.web.conftest import PASSWORD, csrf_token, sign_in

    app = make_app(MAX_CONTENT_LENGTH=10_000)
    client = app.test_client()
    sign_in(client, "alice", PASSWORD)
    token = csrf_token(client.get("/jobs/new").get_data(as_text=True))
    data = {"csrf_token": token, "scans": (io.BytesIO(b"\0" * 20_000), "a.png")}
    response = client.post("/jobs/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
