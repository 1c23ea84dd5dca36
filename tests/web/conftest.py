"""Web fixtures: the app built by the factory over a migrated store, a user, signed-in clients."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web import seed

PASSWORD = "correct horse battery"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_FIRST_DB = 12  # web tests use databases 12..15 of the shared server, one per xdist worker


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """Return a fresh migrated SQLite store (most web logic does not depend on the back end)."""
    path = tmp_path / "web.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def redis_url(worker_id: str) -> str:
    """Return an emptied Redis database of the local server for this test process, or skip."""
    import redis

    index = 0 if worker_id == "master" else int(worker_id.removeprefix("gw")) % 4
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_FIRST_DB + index}"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pytest.skip(f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} (scripts/services.sh starts it)")
    return url


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """Return the scan root, output, upload and model folders of a test app."""
    paths = {name: tmp_path / name for name in ("scans", "outputs", "uploads", "model")}
    for path in paths.values():
        path.mkdir()
    seed.write_model(paths["model"])
    return paths


def build_app(url: str, folders: dict[str, Path], **config):
    from web import create_app

    return create_app({
        "TESTING": True, "SECRET_KEY": "test-secret", "DATABASE_URL": url,
        "SCAN_ROOTS": [folders["scans"]], "OUTPUT_DIR": folders["outputs"],
        "UPLOAD_DIR": folders["uploads"], "DEFAULT_MODEL": folders["model"], "BROKER_URL": None,
        "OVERLAY_CACHE_DIR": folders["outputs"].parent / "overlay-cache", **config})


@pytest.fixture
def make_app(settings, sqlite_url: str, folders: dict[str, Path]):
    """Return ``make(**config)``: the app over the SQLite store with config overrides."""
    return lambda url=sqlite_url, **config: build_app(url, folders, **config)


@pytest.fixture
def app(make_app):
    return make_app()


def app_session(app) -> Iterator:
    """Yield a session on an app's store and close it afterwards."""
    from web.db import EXTENSION

    with app.extensions[EXTENSION]() as s:
        yield s


@pytest.fixture
def session(app):
    """A session on the app's store, closed after the test."""
    yield from app_session(app)


@pytest.fixture
def user_id(session) -> int:
    return seed.add_user(session, "alice", PASSWORD)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def signed_in(client, user_id):
    """A test client signed in as alice through the real sign-in form."""
    sign_in(client, "alice", PASSWORD)
    return client


def csrf_token(html: str) -> str:
    """Return the CSRF token a page carries (meta tag or hidden field)."""
    match = re.search(r'name="csrf-token" content="([^"]+)"', html) or \
        re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page carries no CSRF token"
    return match.group(1)


def sign_in(client, username: str, password: str, next_url: str | None = None):
    """Post the sign-in form with its CSRF token; return the response."""
    page = client.get("/login")
    url = "/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"username": username, "password": password,
                                  "csrf_token": csrf_token(page.get_data(as_text=True))})


@pytest.fixture
def store_session(store_app):
    """A session on the store of a module's own ``store_app`` (defined where it is used)."""
    yield from app_session(store_app)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, one per browser-test module."""
    from tests.web.browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture
def site(app, user_id):
    """The app served over real HTTP, with the user alice."""
    from tests.web.browser import served

    with served(app) as base:
        yield base


@pytest.fixture
def page(browser, site):
    """A signed-in page of a fresh browser context; no Content Security Policy error may occur."""
    from tests.web.browser import Watched, sign_in as browser_sign_in

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    watched = Watched(context.new_page())
    browser_sign_in(watched.page, site, "alice", PASSWORD)
    yield watched
    context.close()
    assert not [e for e in watched.errors if "Content Security Policy" in e], watched.errors
