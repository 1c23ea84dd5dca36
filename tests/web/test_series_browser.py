"""The report's series view in headless Chromium: expand a series, its strip in slice order."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.web import seed
from tests.web.test_series import seed_job

pytestmark = pytest.mark.browser


@pytest.fixture
def series_job(session, folders):
    """The series of test_series, with real thumbnails (each slice's number drawn into it)."""
    return seed_job(session, folders, outputs=folders["outputs"])


def loaded(images) -> list[bool]:
    return images.evaluate_all("els => els.map(i => i.complete && i.naturalWidth > 0)")


def test_expand_a_series_and_step_through_its_slices(page, site, series_job, tmp_path):
    job, made = series_job
    p = page.page
    p.goto(f"{site}/jobs/{job.id}")
    rows = p.locator("details.series-row")
    expect(rows).to_have_count(3)
    t1 = p.locator(f"details.series-row[data-series='{made['t1'].key[:8]}']")
    strip = t1.locator("ol.strip")
    expect(strip).to_be_hidden()  # closed until asked
    shots = [tmp_path / "series-closed.png"]
    p.screenshot(path=str(shots[-1]), full_page=True)

    t1.locator("summary").click()
    expect(strip).to_be_visible()
    tiles = strip.locator("li.tile")
    expect(tiles).to_have_count(7)
    assert tiles.evaluate_all("els => els.map(e => Number(e.dataset.index))") == list(range(7))
    lefts = [tiles.nth(i).bounding_box()["x"] for i in range(7)]
    assert lefts == sorted(lefts) and len(set(lefts)) == 7  # one row, left to right in slice order
    images = strip.locator("img")
    expect(images).to_have_count(6)  # the failed slice has a placeholder, not an image
    images.last.scroll_into_view_if_needed()
    p.wait_for_function("els => els.every(i => i.complete && i.naturalWidth > 0)",
                        arg=images.element_handles())
    assert loaded(images) == [True] * 6
    assert images.evaluate_all("els => els.map(i => i.alt)") == [f"slice {i}" for i in (1, 2, 3, 4, 5, 6)]

    called = strip.locator("li.tile.called")
    expect(called).to_have_count(3)
    assert called.evaluate_all("els => els.map(e => Number(e.dataset.index))") == [2, 3, 4]
    expect(called.first.locator(".marker").first).to_have_text("▲ tumor")
    border = "e => getComputedStyle(e.querySelector('a')).borderTopColor"
    assert called.first.evaluate(border) != strip.locator("li.tile").first.evaluate(border)
    expect(strip.locator("li.tile.strongest .star")).to_be_visible()
    assert strip.locator("li.tile.strongest").get_attribute("data-index") == "3"
    heights = tiles.evaluate_all("els => els.map(e => e.getBoundingClientRect().height)")
    assert len(set(heights)) == 1, heights  # markers never wrap a tile taller than the others
    assert "LOCALIZER" in p.locator("details.series-row.skipped").inner_text()
    shots.append(tmp_path / "series-open.png")
    p.screenshot(path=str(shots[-1]), full_page=True)
    shots.append(tmp_path / "series-strip.png")
    t1.screenshot(path=str(shots[-1]))

    tiles.nth(2).locator("a").click()
    p.wait_for_url(re.compile(rf".*/scans/{made['t1'].slices[2][0]}\?frame=0$"))
    expect(p.locator("#slice-position")).to_contain_text("slice 3 of 7 in series 2 AX T1 SE")
    p.click("#next-slice")
    expect(p.locator("#slice-position")).to_contain_text("slice 4 of 7")
    assert p.url.endswith(f"/scans/{made['t1'].slices[3][0]}?frame=0")
    shots.append(tmp_path / "series-scan.png")
    p.screenshot(path=str(shots[-1]), full_page=True)
    for shot in shots:
        assert shot.stat().st_size > 10_000, shot
    print("screenshots:", *shots)
    assert page.dialogs == []


def test_long_series_strip_scrolls_and_says_how_many_more(page, site, session, folders, tmp_path):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    made = seed.add_series(session, job, seed.SeriesSeed("7.7", "7", [0.1 + 0.004 * i for i in range(210)],
                                                         number=9, description="AX 3D T1 MPRAGE"))
    session.commit()
    p = page.page
    p.goto(f"{site}/jobs/{job.id}")
    row = p.locator(f"details.series-row[data-series='{made.key[:8]}']")
    row.locator("summary").click()
    expect(row.locator("li.tile")).to_have_count(200)
    expect(row.locator(".more")).to_contain_text("… 10 more slices")
    strip = row.locator("ol.strip")
    width = strip.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width[0] > width[1]  # the strip scrolls inside the card rather than widening the page
    assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    row.screenshot(path=str(tmp_path / "series-long.png"))
    print("screenshot:", tmp_path / "series-long.png")
