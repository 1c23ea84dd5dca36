"""The report's series view and the scan page's slice stepping, on series seeded in the store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy import event

from tests.web import seed
from tests.web.conftest import PASSWORD, sign_in
from web.db import EXTENSION
from web.series import place_in_series, series_section
from worker.models import JobStatus, Result, Scan, ScanStatus

STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.1111111111", "1.2.826.0.1.3680043.8.498.2222222222"
UID_T1 = "1.2.826.0.1.3680043.8.498.90210000000000000001"
UID_LOC = "1.2.826.0.1.3680043.8.498.90210000000000000002"
UID_FLAIR = "1.2.826.0.1.3680043.8.498.90210000000000000003"
LOCALIZER = "skipped: a localizer (ImageType LOCALIZER)"
T1_WALK = [3, 0, 6, 1, 5, 2, 4]  # the order the walk met the T1 files: ids are not slice order


def t1() -> seed.SeriesSeed:
    """Seven slices; 2-4 called tumor, 1 outside the model's experience, 6 failed."""
    return seed.SeriesSeed(UID_T1, STUDY_A, [0.1, 0.95, 0.7, 0.9, 0.8, 0.3, None], number=2,
                           walk_order=T1_WALK, ood={1: 1.6})


def localizer() -> seed.SeriesSeed:
    return seed.SeriesSeed(UID_LOC, STUDY_A, [None] * 3, number=1, description="LOCALIZER",
                           orientation="mixed", sequence="unknown", sequence_because="",
                           reason=LOCALIZER)


def flair() -> seed.SeriesSeed:
    """One multi-frame file whose frames are not in anatomical order; slice 1 called."""
    return seed.SeriesSeed(UID_FLAIR, STUDY_B, [0.05, 0.6, 0.2, 0.1], number=5,
                           description="SAG FLAIR", orientation="sagittal", sequence="FLAIR",
                           sequence_because="InversionTime 2500 ms, RepetitionTime 9000 ms → FLAIR",
                           walk_order=[2, 0, 3, 1], multiframe=True)


def seed_job(session, folders, outputs=None):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    if outputs is None:
        seed.add_rows(session, job, [seed.Row("plain/not_dicom.png", 0.4)])
    else:
        seed.add_analysed(session, job, outputs, [("plain/not_dicom.png", 0.4)])
    made = {name: seed.add_series(session, job, spec(), outputs)
            for name, spec in (("t1", t1), ("localizer", localizer), ("flair", flair))}
    # a careless writer's metadata: the scan page must drop it again
    session.query(Result).filter(Result.scan_id == made["t1"].slices[3][0]).update(
        {"image_info": {"modality": "MR", "SeriesInstanceUID": UID_T1, "StudyInstanceUID": STUDY_A}})
    session.commit()
    return job, made


@pytest.fixture
def series_job(session, folders):
    return seed_job(session, folders)


def report(client, job, **args) -> str:
    response = client.get(f"/jobs/{job.id}", query_string=args)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def series_block(html: str, key: str) -> str:
    """Return the <details> of one series, by its shortened key."""
    match = re.search(rf'<details class="series-row[^"]*"[^>]*data-series="{key[:8]}".*?</details>', html, re.S)
    assert match, f"no series row {key[:8]}"
    return match.group(0)


def tiles(block: str) -> list[tuple[str, int, int, str]]:
    """Return (classes, slice index, scan id, href) of a strip's tiles, in page order."""
    found = re.findall(r'<li class="(tile[^"]*)" data-index="(\d+)" data-scan="(\d+)">\s*<a href="([^"]+)"', block)
    return [(c, int(i), int(s), h.replace("&amp;", "&")) for c, i, s, h in found]


def test_one_row_per_series_grouped_by_study(signed_in, series_job):
    job, made = series_job
    html = report(signed_in, job)
    assert html.count('<details class="series-row') == 3
    studies = re.findall(r'<div class="study" data-study="([0-9a-f]+)"', html)
    assert studies == [made["t1"].study_key[:8], made["flair"].study_key[:8]]
    shown = re.findall(r'data-series="([0-9a-f]+)"', html)
    # series by number within their study: the localizer (1) before the T1 (2)
    assert shown == [made[n].key[:8] for n in ("localizer", "t1", "flair")]
    row = series_block(html, made["t1"].key)
    summary = row.split("</summary>")[0]
    for text in ("AX T1 SE", "MR · HEAD", "axial", "T1", "RepetitionTime 500 ms, EchoTime 12 ms → T1"):
        assert text in summary
    assert 'title="RepetitionTime 500 ms' in summary
    # top-3 mean of 0.9, 0.8, 0.7 (slice 1 is outside the model's experience: counted 0)
    assert "0.800" in summary and "▲ tumor" in summary and 'class="call call-tumor"' in summary
    flair_summary = series_block(html, made["flair"].key).split("</summary>")[0]
    assert "0.300" in flair_summary and "no tumor" in flair_summary and "▲" not in flair_summary


def test_strip_is_in_slice_order_with_called_slices_marked(signed_in, series_job):
    job, made = series_job
    block = series_block(report(signed_in, job), made["t1"].key)
    strip = tiles(block)
    assert [i for _, i, _, _ in strip] == list(range(7))
    assert [s for _, _, s, _ in strip] == [scan for scan, _ in made["t1"].slices]
    assert [s for _, _, s, _ in strip] != sorted(s for _, _, s, _ in strip)  # not id order
    assert {i for c, i, _, _ in strip if "called" in c.split()} == {2, 3, 4}
    assert {i for c, i, _, _ in strip if "outside" in c.split()} == {1}  # 0.95, but no evidence
    assert [i for c, i, _, _ in strip if "strongest" in c.split()] == [3]  # the series' own
    for classes, index, scan_id, href in strip:
        assert href == f"/scans/{scan_id}?frame=0"
    items = re.findall(r'<li class="tile.*?</li>', block, re.S)
    assert all(("▲ tumor" in item) == (i in (2, 3, 4)) for i, item in enumerate(items))  # text, not colour
    assert block.count("/thumbnail.jpg") == 6 and "failed" in items[6]  # the failed slice: no image
    assert "Called slices: 3–5" in block  # the series' runs, slices counted from 1


def test_multiframe_strip_follows_the_frames_slice_order(signed_in, series_job):
    job, made = series_job
    strip = tiles(series_block(report(signed_in, job), made["flair"].key))
    scan_id = made["flair"].slices[0][0]
    assert [h for *_, h in strip] == [f"/scans/{scan_id}?frame={f}" for f in (1, 3, 0, 2)]
    assert [i for c, i, _, _ in strip if "called" in c.split()] == [1]


def test_skipped_series_says_why_and_calls_nothing(signed_in, series_job):
    job, made = series_job
    block = series_block(report(signed_in, job), made["localizer"].key)
    assert LOCALIZER in block and "<meter" not in block and "▲" not in block
    assert "No slice of this series was analysed" in block
    first = made["localizer"].slices[0][0]
    assert f'href="/scans/{first}?frame=0" class="first-slice"' in block


def test_skipped_is_a_status_filter_showing_the_reason(signed_in, series_job):
    job, made = series_job
    html = report(signed_in, job, status="skipped")
    assert '<option value="skipped" selected>' in html
    assert 'id="row-count">3 matching rows' in html
    rows = re.findall(r'<tr data-scan="(\d+)">(.*?)</tr>', html, re.S)
    assert sorted(int(s) for s, _ in rows) == sorted(s for s, _ in made["localizer"].slices)
    reason = LOCALIZER.removeprefix("skipped: ")
    for _, body in rows:  # the badge says skipped, the reason beside it why; not shown as an error
        assert '<span class="status status-skipped">skipped</span>' in body
        assert f'<span class="muted skip-reason">{reason}</span>' in body and "error-text" not in body
    assert '<b data-field="skipped">3</b> skipped' in html


def test_nothing_identifying_reaches_the_pages(signed_in, series_job):
    job, made = series_job
    pages = [report(signed_in, job)] + [
        signed_in.get(f"/scans/{scan}?frame={frame}").get_data(as_text=True)
        for series in made.values() for scan, frame in series.slices[:4]]
    for html in pages:
        for secret in (UID_T1, UID_LOC, UID_FLAIR, STUDY_A, STUDY_B, "90210000", "3680043"):
            assert secret not in html
        for series in made.values():
            assert series.key not in html and series.study_key not in html
            assert series.key[:9] not in html  # shortened to 8 characters, not more
    assert made["t1"].key[:8] in pages[0]


@contextmanager
def configured(make_app, folders, **config) -> Iterator[tuple]:
    """Yield a signed-in client of an app with ``config``, its job id and seeded series."""
    app = make_app(**config)
    with app.extensions[EXTENSION]() as session:
        job, made = seed_job(session, folders)
        job_id = job.id
    client = app.test_client()
    sign_in(client, "alice", PASSWORD)
    yield client, SimpleNamespace(id=job_id), made


def test_the_strip_is_capped_with_a_note(make_app, user_id, folders):
    with configured(make_app, folders, SERIES_STRIP_CAP=4) as (client, job, made):
        html = report(client, job)
    block = series_block(html, made["t1"].key)
    assert [i for _, i, _, _ in tiles(block)] == [0, 1, 2, 3]
    assert "… 3 more slices" in block
    assert "more slice" not in series_block(html, made["flair"].key)


def test_series_come_in_pages(make_app, user_id, folders):
    with configured(make_app, folders, SERIES_PAGE_SIZE=2) as (client, job, made):
        first, second = report(client, job), report(client, job, series_page=2)
    assert re.findall(r'data-series="([0-9a-f]+)"', first) == [made[n].key[:8] for n in ("localizer", "t1")]
    assert "Series page 1 of 2" in first and "series_page=2" in first
    assert re.findall(r'data-series="([0-9a-f]+)"', second) == [made["flair"].key[:8]]


def count_queries(session, action) -> int:
    statements = []
    engine = session.get_bind()
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    return len(statements)


def test_report_queries_do_not_grow_with_the_series(signed_in, session, folders):
    job, _ = seed_job(session, folders)
    few = count_queries(session, lambda: report(signed_in, job))
    for n in range(12):
        seed.add_series(session, job, seed.SeriesSeed(f"9.{n}", f"8.{n % 3}", [0.2, 0.6, 0.1], number=n))
    session.commit()
    html = []
    many = count_queries(session, lambda: html.append(report(signed_in, job)))
    assert html[0].count('<details class="series-row') == 15
    assert many == few


def nav_links(html: str) -> tuple[str | None, str | None, str]:
    nav = re.search(r'<nav class="card series-nav".*?</nav>', html, re.S)
    assert nav, "no series navigation"
    prev = re.search(r'id="prev-slice" href="([^"]+)"', nav.group(0))
    nxt = re.search(r'id="next-slice" href="([^"]+)"', nav.group(0))
    text = re.sub(r"<[^>]+>|\s+", " ", re.search(r'id="slice-position">(.*?)</span>\s*(?:<a|<span class="muted)',
                                                 nav.group(0), re.S).group(1))
    return (prev and prev.group(1).replace("&amp;", "&"), nxt and nxt.group(1).replace("&amp;", "&"),
            " ".join(text.split()))


def test_scan_page_steps_through_the_series_in_anatomical_order(signed_in, series_job):
    job, made = series_job
    slices = made["t1"].slices
    for index, (scan_id, frame) in enumerate(slices):
        prev, nxt, text = nav_links(signed_in.get(f"/scans/{scan_id}?frame={frame}").get_data(as_text=True))
        assert text.startswith(f"slice {index + 1} of 7 in series 2 AX T1 SE"), text
        assert prev == (None if index == 0 else f"/scans/{slices[index - 1][0]}?frame=0")
        assert nxt == (None if index == 6 else f"/scans/{slices[index + 1][0]}?frame=0")


def test_scan_page_steps_through_frames_and_keeps_the_report_filter(signed_in, series_job):
    job, made = series_job
    scan_id = made["flair"].slices[0][0]
    html = signed_in.get(f"/scans/{scan_id}?frame=3&status=done").get_data(as_text=True)  # slice 2
    prev, nxt, text = nav_links(html)
    assert text.startswith("slice 2 of 4 in series 5 SAG FLAIR")
    assert prev == f"/scans/{scan_id}?frame=1&status=done" and nxt == f"/scans/{scan_id}?frame=0&status=done"


def test_skipped_slice_page_says_why_and_still_steps(signed_in, series_job):
    job, made = series_job
    slices = made["localizer"].slices
    html = signed_in.get(f"/scans/{slices[1][0]}").get_data(as_text=True)
    assert 'id="skipped"' in html and LOCALIZER in html
    prev, nxt, text = nav_links(html)
    assert text.startswith("slice 2 of 3 in series 1 LOCALIZER")
    assert prev == f"/scans/{slices[0][0]}?frame=0" and nxt == f"/scans/{slices[2][0]}?frame=0"


def test_a_scan_of_no_series_has_no_slice_stepping(signed_in, series_job, session):
    job, _ = series_job
    plain = session.query(Scan).filter(Scan.path == "plain/not_dicom.png").one()
    assert 'id="series-nav"' not in signed_in.get(f"/scans/{plain.id}").get_data(as_text=True)


@pytest.fixture
def store_app(make_app, database_url):
    return make_app(url=database_url)


def test_order_and_neighbours_on_both_back_ends(store_session, folders):
    """The frame's place is read from JSON in SQL: SQLite and PostgreSQL must agree."""
    job, made = seed_job(store_session, folders)
    section = series_section(store_session, job.id, 0.5)
    rows = {row.series.key: row for study in section.studies for row in study.rows}
    assert [(t.scan_id, t.frame) for t in rows[made["flair"].key].tiles] == made["flair"].slices
    assert [(t.scan_id, t.frame) for t in rows[made["t1"].key].tiles] == made["t1"].slices
    assert [t.called for t in rows[made["t1"].key].tiles] == [False, False, True, True, True, False, False]
    scan = store_session.get(Scan, made["flair"].slices[2][0])
    place = place_in_series(store_session, scan, made["flair"].slices[2][1])
    assert place.index == 2 and place.count == 4
    assert (place.prev.scan_id, place.prev.frame) == made["flair"].slices[1]
    assert (place.next.scan_id, place.next.frame) == made["flair"].slices[3]


def test_before_the_job_finishes_the_order_is_not_guessed(signed_in, series_job, session):
    job, made = series_job
    ids = [scan for scan, _ in made["t1"].slices]
    session.query(Scan).filter(Scan.id.in_(ids)).update({"slice_index": None}, synchronize_session=False)
    session.commit()
    html = signed_in.get(f"/scans/{ids[2]}").get_data(as_text=True)
    prev, nxt, text = nav_links(html)
    assert prev is None and nxt is None
    assert text.startswith("one of 7 slices (their order is known when the job has finished)")
    block = series_block(report(signed_in, job), made["t1"].key)
    assert 'data-index=""' in block and "slice (order not known yet)" in block


def test_series_text_is_escaped(signed_in, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    seed.add_series(session, job, seed.SeriesSeed("5.5", "5", [0.7, 0.2, 0.1], number=3,
                                                  description="<img src=x onerror=alert(1)>",
                                                  sequence_because='"><script>alert(2)</script>'))
    session.commit()
    html = report(signed_in, job)
    assert "<img src=x" not in html and "<script>alert(2)" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and 'title="&#34;&gt;&lt;script&gt;' in html


def test_skipped_slices_count_as_handled_in_the_progress(signed_in, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", JobStatus.RUNNING)
    seed.add_series(session, job, localizer())
    seed.add_rows(session, job, [seed.Row("a.png", 0.3), seed.Row("b.png", None, ScanStatus.PENDING)])
    session.commit()
    progress = signed_in.get(f"/api/jobs/{job.id}").get_json()["progress"]
    assert (progress["skipped"], progress["total"], progress["fraction"]) == (3, 5, 0.8)
