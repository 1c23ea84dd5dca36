"""On-demand overlays: drawn by the web from the source scan and the stored map, cached, told when
the source is gone or changed. Real SQLite store, real files, a real HTTP server for the cache cap."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from pipeline.explain.overlay import write_outputs
from tests.web import seed
from tests.web.browser import served
from tests.web.conftest import PASSWORD, csrf_token
from web.overlays import EXTENSION, overlay_key
from worker.models import Result


def scan_pixels(seed_: int, width: int = 120, height: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed_)
    return rng.integers(0, 256, (height, width), dtype=np.uint8)


def hot_map(seed_: int) -> np.ndarray:
    cam = np.random.default_rng(seed_).random((9, 9)).astype(np.float32)
    return cam / cam.max()


def analysed_on_demand(session, folders, count: int, size=(120, 90)) -> list[Result]:
    """A done job whose scans have thumbnails and maps only, as an on-demand job leaves them."""
    names = [f"s{i:03d}.png" for i in range(count)]
    for i, name in enumerate(names):
        Image.fromarray(scan_pixels(i, *size)).save(folders["scans"] / name)
        write_outputs(folders["outputs"] / f"r{i:03d}", scan_pixels(i, *size), hot_map(i))
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    ids = seed.add_rows(session, job, [seed.Row(name, 0.5 + i / (2 * count), artifacts=f"r{i:03d}")
                                       for i, name in enumerate(names)], *size)
    session.commit()
    return [session.query(Result).filter(Result.scan_id == scan_id).one() for scan_id in ids]


@pytest.fixture
def results(session, folders):
    return analysed_on_demand(session, folders, 2)


def eager_bytes(tmp_path: Path, i: int) -> bytes:
    """The overlay ``scan --overlays eager`` writes for scan i."""
    return write_outputs(tmp_path / "eager" / f"s{i}", scan_pixels(i), hot_map(i), overlay=True).overlay.read_bytes()


def test_the_overlay_drawn_on_demand_is_the_eager_one_byte_for_byte(signed_in, results, folders, tmp_path):
    assert not (folders["outputs"] / results[0].overlay).exists()  # nothing stored to send
    for i, result in enumerate(results):
        response = signed_in.get(f"/results/{result.id}/overlay.png")
        assert response.status_code == 200 and response.mimetype == "image/png"
        assert response.get_data() == eager_bytes(tmp_path, i)


def test_an_overlay_is_sent_with_an_etag_and_a_second_ask_gets_304(signed_in, results):
    url = f"/results/{results[0].id}/overlay.png"
    first = signed_in.get(url)
    assert first.headers["Cache-Control"] == "private, max-age=3600"
    tag = first.headers["ETag"].strip('"')
    assert re.fullmatch(r"[0-9a-f]{32}", tag)
    again = signed_in.get(url, headers={"If-None-Match": f'"{tag}"'})
    assert again.status_code == 304 and again.get_data() == b""
    other = signed_in.get(f"/results/{results[1].id}/overlay.png")
    assert other.headers["ETag"] != first.headers["ETag"]


def test_the_first_view_of_the_scan_page_draws_the_overlay_into_the_cache(signed_in, results, app):
    cache = app.extensions[EXTENSION]._open()[0]
    assert overlay_key(results[0]) not in cache
    html = signed_in.get(f"/scans/{results[0].scan_id}").get_data(as_text=True)
    assert 'id="img-overlay"' in html and f"/results/{results[0].id}/overlay.png" in html
    assert overlay_key(results[0]) in cache and overlay_key(results[1]) not in cache
    assert 'id="overlay-problem"' not in html


def test_a_cached_overlay_is_served_after_its_source_is_gone(signed_in, results, folders, tmp_path):
    url = f"/results/{results[0].id}/overlay.png"
    assert signed_in.get(url).status_code == 200
    (folders["scans"] / "s000.png").unlink()
    assert signed_in.get(url).get_data() == eager_bytes(tmp_path, 0)  # drawn once, kept


def test_a_missing_source_is_told_and_the_map_is_shown_over_the_thumbnail(signed_in, results, folders):
    (folders["scans"] / "s000.png").unlink()
    html = signed_in.get(f"/scans/{results[0].scan_id}").get_data(as_text=True)
    problem = re.search(r'<section class="card caution" id="overlay-problem">(.*?)</section>', html, re.S)
    assert problem and "The overlay cannot be drawn" in problem.group(1)
    assert "the file is gone: it was moved or deleted" in problem.group(1)
    assert "shown over the stored thumbnail" in problem.group(1)
    assert f"/results/{results[0].id}/thumbnail.jpg" in html and 'id="heat-layer"' in html
    assert 'id="img-original"' not in html  # no broken image where the scan was
    assert signed_in.get(f"/results/{results[0].id}/thumbnail.jpg").status_code == 200
    assert signed_in.get(f"/results/{results[0].id}/heatmap.png?layer=1").status_code == 200
    gone = signed_in.get(f"/results/{results[0].id}/overlay.png")
    assert gone.status_code == 404 and "the file is gone" in gone.get_data(as_text=True)
    assert 'id="overlay-problem"' not in signed_in.get(f"/scans/{results[1].scan_id}").get_data(as_text=True)


def test_a_changed_source_is_told_and_never_drawn_under_the_old_map(signed_in, results, folders):
    Image.fromarray(scan_pixels(99)).save(folders["scans"] / "s000.png")  # same name, other content
    html = signed_in.get(f"/scans/{results[0].scan_id}").get_data(as_text=True)
    assert "has changed since it was analysed" in html and 'id="img-thumbnail"' in html
    assert signed_in.get(f"/results/{results[0].id}/overlay.png").status_code == 404
    original = signed_in.get(f"/scans/{results[0].scan_id}/original.png")
    assert original.status_code == 404 and "changed since it was analysed" in original.get_data(as_text=True)


def test_an_eager_jobs_stored_overlay_is_sent_as_it_is(signed_in, results, folders):
    stored = folders["outputs"] / results[0].overlay
    stored.write_bytes(b"\x89PNG stored by an eager job")
    assert signed_in.get(f"/results/{results[0].id}/overlay.png").get_data() == stored.read_bytes()


def signed_in_session(base: str) -> requests.Session:
    http = requests.Session()
    token = csrf_token(http.get(f"{base}/login", timeout=30).text)
    reply = http.post(f"{base}/login", data={"username": "alice", "password": PASSWORD,
                                            "csrf_token": token}, timeout=30)
    assert reply.status_code == 200 and "Sign in" not in reply.text.split("<main", 1)[-1][:200]
    return http


def test_the_cache_cap_holds_under_parallel_clients_of_two_servers(make_app, session, folders,
                                                                   user_id, tmp_path):
    """Two web apps (as two processes of one host would) share one cache capped at ~6 overlays."""
    results = analysed_on_demand(session, folders, 24, size=(160, 160))
    one = eager_size = len(write_outputs(tmp_path / "probe", scan_pixels(0, 160, 160), hot_map(0),
                                         overlay=True).overlay.read_bytes())
    cap = 6 * one + 64 * 1024  # six overlays and room for the cache's index
    apps = [make_app(OVERLAY_CACHE_BYTES=cap, OVERLAY_THREADS=2) for _ in range(2)]
    caches = [app.extensions[EXTENSION] for app in apps]
    with served(apps[0]) as first, served(apps[1]) as second:
        clients = [(base, signed_in_session(base)) for base in (first, second) for _ in range(3)]
        urls = [f"/results/{r.id}/overlay.png" for r in results]
        volumes = []

        def fetch(job: tuple[int, int]) -> int:
            client, round_ = job
            base, http = clients[client]
            url = urls[(client * 7 + round_ * 5) % len(urls)]
            reply = http.get(base + url, timeout=60)
            assert reply.status_code == 200 and reply.content[:8] == b"\x89PNG\r\n\x1a\n"
            volumes.append(caches[0].volume())
            return len(reply.content)

        with ThreadPoolExecutor(len(clients)) as pool:
            sizes = list(pool.map(fetch, [(c, r) for r in range(12) for c in range(len(clients))]))
    assert len(sizes) == 72 and min(sizes) > eager_size // 2
    assert max(volumes) <= cap, f"the cache grew to {max(volumes)} bytes over its cap of {cap}"
    assert caches[1].volume() <= cap and len(caches[1]._open()[0]) <= 7
