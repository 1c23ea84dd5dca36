"""The pages in headless Chromium against the app served over HTTP, rows seeded in the store."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.web import seed
from tests.web.browser import broken_images
from worker.models import Job, JobStatus, Scan, ScanStatus

pytestmark = pytest.mark.browser
XSS = "<script>alert(1)</script>.jpg"


@pytest.fixture
def report_job(session, folders):
    """A finished job of twelve analysed scans (one with a hostile name, one outside the model's
    experience), two failures, neurons."""
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json",
                       card={"test": {"accuracy": 0.94, "roc_auc": 0.97}})
    probabilities = [0.97, 0.12, 0.55, 0.81, 0.03, 0.66, 0.29, 0.91, 0.45, 0.72, 0.08]
    rows = [(f"{'YES' if p >= 0.5 else 'NO'}/case_{i:02d}.png", p) for i, p in enumerate(probabilities)]
    seed.add_analysed(session, job, folders["outputs"], rows + [(XSS, 0.61)],
                      ood_scores={"YES/case_03.png": 1.7, "YES/case_00.png": 0.4})
    seed.add_rows(session, job, [
        seed.Row("NO/unreadable.jpg", None, ScanStatus.FAILED, "truncated JPEG: the file ends early"),
        seed.Row("YES/empty.png", None, ScanStatus.FAILED, "not an image: the file is empty")])
    seed.add_neuron_stats(session, job, [0.62, -0.41, 0.05, 0.83, -0.77, 0.31, -0.12, 0.44])
    session.commit()
    return job


def probabilities_shown(page) -> list[float]:
    cells = page.locator("table.scans td.prob").all_inner_texts()
    return [float(t.split()[-1]) for t in cells if t.strip()]


def test_report_sort_open_scan_slider_keys_and_csv(page, site, report_job):
    p = page.page
    p.goto(f"{site}/jobs")
    page.screenshot("jobs")
    p.click(f"a[href='/jobs/{report_job.id}']")
    p.wait_for_url(re.compile(rf".*/jobs/{report_job.id}$"))
    shown = probabilities_shown(p)
    assert shown == sorted(shown, reverse=True) and len(shown) == 12
    assert broken_images(p) == []
    badge = p.locator("table.scans tr:has(a.scan-link:text-is('YES/case_03.png')) .ood-badge")
    expect(badge).to_be_visible()
    expect(badge).to_have_text("outside the model's experience")
    assert p.locator("table.scans .ood-badge").count() == 1
    page.screenshot("report")

    p.click("a.sort[data-sort='probability']")  # second click: lowest first
    p.wait_for_url(re.compile(r".*order=asc.*"))
    shown = probabilities_shown(p)
    assert shown == sorted(shown) and shown[0] == 0.03

    p.click("table.scans tbody tr:first-child a.scan-link")
    p.wait_for_url(re.compile(r".*/scans/\d+.*"))
    assert broken_images(p) == []
    assert p.inner_text("#tumor-probability") == "0.030"
    slider, layer = p.locator("#opacity"), p.locator("#heat-layer")
    assert layer.evaluate("e => getComputedStyle(e).opacity") == "0.8"
    slider.fill("35")
    assert layer.evaluate("e => getComputedStyle(e).opacity") == "0.35"
    assert p.inner_text("#opacity-value") == "35 %"
    page.screenshot("scan")

    p.locator("h1").click()  # leave the slider, which keeps the arrow keys while focused
    p.keyboard.press("ArrowRight")  # the next lowest probability, same filter and order
    expect(p.locator("#tumor-probability")).to_have_text("0.080")
    # The text shows while the page is still parsing; the keys work once scan.js (deferred) ran.
    p.wait_for_load_state("domcontentloaded")
    p.keyboard.press("ArrowLeft")
    expect(p.locator("#tumor-probability")).to_have_text("0.030")
    p.wait_for_load_state("domcontentloaded")
    p.keyboard.press("Escape")
    p.wait_for_url(re.compile(rf".*/jobs/{report_job.id}\?.*order=asc.*"))

    with p.expect_download() as download:
        p.click("a[href$='format=csv']")
    text = open(download.value.path()).read()
    assert text.splitlines()[0].startswith("path,frame,sha256,status")
    assert len(text.splitlines()) == 1 + 14
    assert page.dialogs == []


def test_hostile_file_name_is_text_and_never_runs(page, site, report_job):
    p = page.page
    p.goto(f"{site}/jobs/{report_job.id}?q=script")
    link = p.locator("a.scan-link")
    assert link.inner_text() == XSS  # the markup is shown as the characters it is
    link.click()
    p.wait_for_url(re.compile(r".*/scans/\d+.*"))
    assert p.inner_text("h1").startswith(XSS)
    assert broken_images(p) == []
    assert page.dialogs == []  # no alert() ever fired
    assert p.evaluate("document.querySelectorAll('script:not([src])').length") == 0


def test_neuron_chart_and_failures_render(page, site, report_job):
    p = page.page
    p.goto(f"{site}/jobs/{report_job.id}")
    bars = p.locator("svg.chart rect")
    assert bars.count() == 8
    assert bars.first.bounding_box()["width"] > bars.nth(1).bounding_box()["width"] > 0
    assert "truncated JPEG: the file ends early" in p.inner_text("ul.failures")


def test_progress_bar_follows_the_store_and_reloads_when_done(page, site, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", JobStatus.RUNNING)
    seed.add_rows(session, job, [seed.Row(f"s{i}.png", 0.3) for i in range(2)]
                  + [seed.Row(f"p{i}.png", None, ScanStatus.PENDING) for i in range(6)])
    session.commit()
    p = page.page
    p.goto(f"{site}/jobs/{job.id}")
    assert p.locator("progress").evaluate("e => e.value") == 0.25
    assert p.inner_text("[data-field='status']") == "running"

    session.query(Scan).filter(Scan.path.in_(["p0.png", "p1.png"])).update(
        {"status": ScanStatus.FAILED, "error": "x"}, synchronize_session=False)
    session.commit()
    expect(p.locator("[data-field='percent']")).to_have_text("50 %")
    assert p.locator("progress").evaluate("e => e.value") == 0.5
    assert p.inner_text("[data-field='failed']") == "2"
    page.screenshot("progress")

    session.query(Scan).filter(Scan.status == ScanStatus.PENDING).update(
        {"status": ScanStatus.FAILED, "error": "x"}, synchronize_session=False)
    session.get(Job, job.id).status = JobStatus.DONE
    session.commit()
    expect(p.locator(".progress-block")).to_have_attribute("data-finished", "1")
    expect(p.locator("[data-field='status']")).to_have_text("done")
    assert p.locator("progress").evaluate("e => e.value") == 1
    assert p.locator("form[action$='/cancel']").count() == 0  # the reloaded page knows it is done
