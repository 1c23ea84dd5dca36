"""Acceptance: the whole system as a person uses it, in Chromium against real processes.

``tumorlens web`` and ``tumorlens worker`` run as processes of their own over Redis (a dedicated
database of the local server) and a SQLite store; the scans are real MRI slices from the shared
data; the model is a tiny random-weight Keras classifier.
"""

from __future__ import annotations

import re
import shutil
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.builders.processes import (ProcessGroup, free_port, log_text, start_worker,
                                      tumorlens_argv, tumorlens_env, wait_for)
from tests.web import seed
from tests.web.browser import Watched, broken_images, chromium, sign_in
from tests.web.conftest import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.xdist_group("worker-processes")]
PER_CLASS = 5
JOB_TIMEOUT_MS = 240_000


def copy_scans(shared_data: Path, root: Path) -> Path:
    """Copy a few Br35H slices into ``root/study/YES`` and ``root/study/NO``; return the study."""
    study = root / "study"
    for label, source, prefix in (("YES", "yes", "y"), ("NO", "no", "no")):
        (study / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            name = f"{prefix}{i}.jpg"
            shutil.copyfile(shared_data / "br35h" / source / name, study / label / name)
    return study


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def system(tmp_path: Path, redis_url: str, shared_data: Path):
    """A store with a user, a worker and the web server; yield (base URL, web process)."""
    from tests.builders.models import build_model
    from worker.db import make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    with make_session_factory(url)() as session:
        seed.add_user(session, "alice", PASSWORD)
    copy_scans(shared_data, tmp_path / "archive")
    model = build_model(tmp_path / "model", "sequential", input_size=(32, 32))
    env = tumorlens_env(tmp_path / "home", url, redis_url, output_dir=tmp_path / "outputs",
                        model=model, scan_roots=tmp_path / "archive", batch_size=4,
                        secret_key="acceptance-test-secret")
    group = ProcessGroup(tmp_path / "logs")
    try:
        start_worker(group, env)
        port = free_port()
        web = group.start("web", tumorlens_argv("web", "--port", str(port)), env)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{base}/healthz") or web.poll() is not None, "the web server", 60)
        assert web.poll() is None, log_text(web)
        yield base, web
    finally:
        group.close()


def start_job_on_study(page: Watched) -> None:
    """Pick the study folder in the browser, choose Grad-CAM, start; land on the report."""
    p = page.page
    p.click("nav a[href='/jobs/new']")
    p.click("a.folder:text('study')")
    expect(p.locator("b.path")).to_have_text("study")
    form = p.locator("form[action='/jobs']")
    expect(form.locator("select[name=model] option").first).to_have_text(
        "Default model (sequential-probabilities)")
    form.locator("select[name=method]").select_option("gradcam")
    page.screenshot("acceptance-new-job")
    form.locator("button[type=submit]").click()
    p.wait_for_url(re.compile(r".*/jobs/\d+$"))


def open_lowest_scan_and_blend(page: Watched) -> None:
    """Sort the report lowest probability first, open the first scan, move the opacity slider."""
    p = page.page
    p.click("a.sort[data-sort='probability']")
    p.wait_for_url(re.compile(r".*order=asc.*"))
    shown = [float(t.split()[-1]) for t in p.locator("td.prob").all_inner_texts()]
    assert len(shown) == 2 * PER_CLASS and shown == sorted(shown)
    assert broken_images(p) == []
    p.click("table.scans tbody tr:first-child a.scan-link")
    p.wait_for_url(re.compile(r".*/scans/\d+.*"))
    assert broken_images(p) == []
    p.locator("#opacity").fill("30")
    assert p.locator("#heat-layer").evaluate("e => getComputedStyle(e).opacity") == "0.3"
    page.screenshot("acceptance-scan")


def download_csv(p) -> list[str]:
    """Download the report's CSV; return its lines."""
    with p.expect_download() as download:
        p.click("a[href$='format=csv']")
    return Path(download.value.path()).read_text().splitlines()


def test_start_a_job_watch_it_finish_and_browse_the_results(system):
    base, web = system
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        context.set_default_timeout(20_000)
        page = Watched(context.new_page())
        sign_in(page.page, base, "alice", PASSWORD)
        start_job_on_study(page)

        p = page.page
        expect(p.locator("[data-field='status']")).to_have_text("done", timeout=JOB_TIMEOUT_MS)
        expect(p.locator("[data-field='percent']")).to_have_text("100 %")
        expect(p.locator("#row-count")).to_have_text(f"{2 * PER_CLASS} matching rows")
        assert broken_images(p) == []
        page.screenshot("acceptance-report")

        open_lowest_scan_and_blend(page)
        p.keyboard.press("Escape")
        p.wait_for_url(re.compile(r".*/jobs/\d+\?.*"))
        lines = download_csv(p)
        assert lines[0].startswith("path,frame,sha256,status") and len(lines) == 1 + 2 * PER_CLASS
        assert all(",done," in line for line in lines[1:])
        assert page.dialogs == [] and not [e for e in page.errors if "Security Policy" in e]
        context.close()
    maps = Path(f"/proc/{web.pid}/maps").read_text()
    assert "tensorflow" not in maps, "the web process loaded TensorFlow"
