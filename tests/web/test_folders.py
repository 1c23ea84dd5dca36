"""The folder browser lists scan roots and never leaves them, whatever the path says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from web.folders import FolderError, check_relative, list_folder, resolve


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A scan root with sub-folders, scans, a link inside and links out; and a secret outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder in (root / "study" / "YES", root / "study" / "NO", outside):
        folder.mkdir(parents=True)
    for name in ("a.jpg", "b.PNG", "c.dcm", "notes.txt"):
        (root / "study" / "YES" / name).write_bytes(b"x")
    (root / "study" / "NO" / "n.jpg").write_bytes(b"x")
    (outside / "secret.jpg").write_bytes(b"x")
    os.symlink(outside, root / "escape")
    os.symlink(root / "study" / "NO", root / "shortcut")
    return root, outside


def test_lists_subfolders_with_scan_counts(tree):
    root, _ = tree
    listing = list_folder([root], 0, "study")
    assert [(e.name, e.path, e.scans) for e in listing.folders] == [("NO", "study/NO", 1),
                                                                   ("YES", "study/YES", 3)]
    assert listing.parent == "" and listing.path == "study" and listing.scans == 0


def test_root_listing_hides_links_that_point_outside(tree):
    root, _ = tree
    names = [e.name for e in list_folder([root], 0, "").folders]
    assert names == ["shortcut", "study"]  # "escape" points outside and is not offered


@pytest.mark.parametrize("rel", [
    "..", "../outside", "study/../../outside", "study/./YES", "/etc", "/", "C:/Windows",
    "study\\..\\..", "%2e%2e", "%2e%2e/outside", "%252e%252e", "study/%2E%2E/%2E%2E", "a\x00b",
])
def test_traversal_attempts_are_refused(tree, rel):
    root, _ = tree
    with pytest.raises(FolderError):
        resolve([root], 0, rel)


def test_a_link_out_of_the_root_is_refused(tree):
    root, _ = tree
    with pytest.raises(FolderError, match="outside the scan root"):
        resolve([root], 0, "escape")


def test_a_link_that_stays_inside_is_allowed(tree):
    root, _ = tree
    assert resolve([root], 0, "shortcut")[1] == (root / "study" / "NO").resolve()


def test_a_link_loop_is_refused_in_words(tree):
    root, _ = tree
    os.symlink(root / "loop", root / "loop")
    with pytest.raises(FolderError, match="link loop"):
        resolve([root], 0, "loop/inner")
    assert "loop" not in [e.name for e in list_folder([root], 0, "").folders]


def test_unknown_root_and_missing_folder(tree):
    root, _ = tree
    with pytest.raises(FolderError, match="root does not exist"):
        resolve([root], 1, "")
    with pytest.raises(FolderError, match="root does not exist"):
        resolve([root], -1, "")
    with pytest.raises(FolderError, match="does not exist"):
        resolve([root], 0, "study/MAYBE")


def test_clean_relative_paths_pass():
    assert str(check_relative("study//YES/")) == "study/YES"
    assert str(check_relative("")) == "."


def _traversals(client, base: str) -> list:
    attempts = ["..", "../outside", "/etc", "%2e%2e", "%252e%252e", "..%2foutside", "escape",
                "study%5c..%5c..", "%00"]
    return [client.get(f"{base}&path={a}") for a in attempts]


@pytest.fixture
def browsing_app(make_app, tree):
    root, _ = tree
    return make_app(SCAN_ROOTS=[root])


def test_api_folder_browser_refuses_traversal_over_http(browsing_app, user_id):
    from tests.web.conftest import PASSWORD, sign_in

    client = browsing_app.test_client()
    sign_in(client, "alice", PASSWORD)
    ok = client.get("/api/folders?root=0&path=study")
    assert ok.status_code == 200 and ok.get_json()["folders"][1]["scans"] == 3
    for response in _traversals(client, "/api/folders?root=0"):
        assert response.status_code == 400, response.request.url
        assert "secret" not in response.get_data(as_text=True)


def test_page_folder_browser_refuses_traversal_and_starting_outside(browsing_app, user_id):
    from tests.web.conftest import PASSWORD, csrf_token, sign_in

    client = browsing_app.test_client()
    sign_in(client, "alice", PASSWORD)
    for response in _traversals(client, "/jobs/new?root=0"):
        body = response.get_data(as_text=True)
        assert response.status_code == 200 and 'class="flash error"' in body
        assert "outside" not in body.split('class="folders"')[1].split("</table>")[0]
    token = csrf_token(client.get("/jobs/new").get_data(as_text=True))
    started = client.post("/jobs", data={"root": "0", "path": "../outside", "csrf_token": token,
                                         "model": "default", "method": "gradcam"},
                          follow_redirects=True)
    assert "may not contain" in started.get_data(as_text=True)
