"""Scans outside the model's experience: the filter, the badge, the scan page's sentence, the API."""

from __future__ import annotations

import re

import pytest

from tests.web import seed
from tests.web.conftest import PASSWORD, sign_in
from web.filters import FilterError, ScanFilter
from web.queries import OodCounts, neighbours, ood_counts, scan_rows
from web.templating import times_limit
from worker.models import ScanStatus

SENTENCE = ("This scan lies outside what the model was trained on (distance 1.7 × its limit): "
            "treat its label as unreliable.")


def corpus() -> list[seed.Row]:
    """Two scans outside, three within (one exactly at the limit), two not measured, a failure."""
    return [seed.Row("far.jpg", 0.91, ood_score=1.7), seed.Row("odd.jpg", 0.12, ood_score=3.25),
            seed.Row("near.jpg", 0.83, ood_score=0.4), seed.Row("edge.jpg", 0.55, ood_score=1.0),
            seed.Row("close.jpg", 0.07, ood_score=0.2), seed.Row("old_a.jpg", 0.66),
            seed.Row("old_b.jpg", 0.31),
            seed.Row("bad.jpg", None, ScanStatus.FAILED, "truncated JPEG: the file ends early")]


OUTSIDE = ["far.jpg", "odd.jpg"]  # by probability, highest first
WITHIN = ["near.jpg", "edge.jpg", "close.jpg"]


@pytest.fixture
def store_app(make_app, database_url):
    return make_app(url=database_url)


@pytest.fixture
def store_job(store_session, folders):
    return seed.seeded_job(store_session, folders, corpus())


@pytest.fixture
def job(session, folders):
    return seed.seeded_job(session, folders, corpus())


def paths(rows) -> list[str]:
    return [row.path for row in rows]


@pytest.mark.parametrize("ood, want", [(True, OUTSIDE), (False, WITHIN)])
def test_the_filter_finds_exactly_the_scans_outside_or_within(store_session, store_job, ood, want):
    page = scan_rows(store_session, store_job.id, ScanFilter(ood=ood), 1, 50)
    assert paths(page.rows) == want and page.total == len(want)
    rows = page.rows
    for i, row in enumerate(rows):  # the scan page steps through the same selection
        prev, nxt = neighbours(store_session, store_job.id, ScanFilter(ood=ood), row.scan_id, row.frame)
        assert (prev.scan_id if prev else None) == (rows[i - 1].scan_id if i else None)
        assert (nxt.scan_id if nxt else None) == (rows[i + 1].scan_id if i + 1 < len(rows) else None)


def test_the_summary_counts_scans_outside(store_session, store_job, folders):
    assert ood_counts(store_session, store_job.id) == OodCounts(measured=5, outside=2)
    unmeasured = seed.add_job(store_session, folders["scans"], folders["model"] / "model.json")
    seed.add_rows(store_session, unmeasured, [seed.Row("a.jpg", 0.4)])
    assert ood_counts(store_session, unmeasured.id) == OodCounts(measured=0, outside=0)


def test_report_page_and_api_agree_on_the_filter(store_app, store_job, user_id_store):
    client = store_app.test_client()
    sign_in(client, "alice", PASSWORD)
    for value, want in (("1", OUTSIDE), ("0", WITHIN)):
        html = client.get(f"/jobs/{store_job.id}?ood={value}").get_data(as_text=True)
        assert re.findall(r'class="scan-link">([^<]*)</a>', html) == want
        assert f'<option value="{value}" selected>' in html
        api = client.get(f"/api/jobs/{store_job.id}/scans?ood={value}").get_json()
        assert [r["path"] for r in api["rows"]] == want and api["total"] == len(want)


@pytest.fixture
def user_id_store(store_session) -> int:
    return seed.add_user(store_session, "alice", PASSWORD)


@pytest.mark.parametrize("value", ["2", "yes", "true", "-1"])
def test_other_values_are_refused_in_words(value):
    with pytest.raises(FilterError, match=r"ood must be 1 \(only scans outside the model's "
                                          r"experience\) or 0"):
        ScanFilter.from_args({"ood": value})


def test_the_filter_reads_and_writes_its_argument():
    assert ScanFilter.from_args({"ood": "1"}).ood is True
    assert ScanFilter.from_args({"ood": " 0 "}).ood is False
    assert ScanFilter.from_args({"ood": ""}).ood is None
    assert ScanFilter(ood=True).to_args() == {"ood": "1"}
    assert ScanFilter(ood=False, min_p=0.5).to_args() == {"ood": "0", "min_p": "0.5"}
    assert ScanFilter().to_args() == {}


def test_a_bad_value_answers_400_in_the_api_and_is_flashed_on_the_page(signed_in, job):
    api = signed_in.get(f"/api/jobs/{job.id}/scans?ood=2")
    assert api.status_code == 400
    assert api.get_json() == {"status": 400, "error": "ood must be 1 (only scans outside the model's "
                                                      "experience) or 0 (only scans measured and "
                                                      "within it)."}
    html = signed_in.get(f"/jobs/{job.id}?ood=2").get_data(as_text=True)
    assert "ood must be 1 (only scans outside the model&#39;s experience)" in html
    assert len(re.findall(r'class="scan-link"', html)) == len(corpus())  # the default filter


def rows_of(html: str) -> dict[str, str]:
    """Return each table row's HTML by the scan path it links."""
    found = {}
    for row in re.findall(r'<tr data-scan="\d+">(.*?)</tr>', html, re.S):
        found[re.search(r'class="scan-link">([^<]*)</a>', row).group(1)] = row
    return found


def test_the_badge_shows_only_on_scans_outside_with_their_probability(signed_in, job):
    rows = rows_of(signed_in.get(f"/jobs/{job.id}").get_data(as_text=True))
    badged = sorted(path for path, row in rows.items() if "ood-badge" in row)
    assert badged == sorted(OUTSIDE)
    far = rows["far.jpg"]
    assert "outside the model's experience</span>" in far and "0.910" in far  # still shown
    assert "1.7 × the model's limit" in far  # the title says how far
    assert "0.830" in rows["near.jpg"] and "0.550" in rows["edge.jpg"]  # at the limit is within


def test_the_summary_says_how_many_are_outside(signed_in, job, session, folders):
    html = signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
    summary = re.search(r'<dd id="ood-count">(.*?)</dd>', html, re.S).group(1)
    text = re.sub(r"<[^>]+>", "", summary)
    assert text.startswith("2 of 5 measured scans (their labels are unreliable)")
    assert f'href="/jobs/{job.id}?ood=1"' in summary
    assert 'name="ood"' in html  # the filter is offered
    unmeasured = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    seed.add_rows(session, unmeasured, [seed.Row("a.jpg", 0.4)])
    session.commit()
    html = signed_in.get(f"/jobs/{unmeasured.id}").get_data(as_text=True)
    assert 'id="ood-count"' not in html and "model's experience" not in html
    assert 'name="ood"' not in html  # nothing to filter on


def scan_id(client, job, path: str) -> int:
    rows = client.get(f"/api/jobs/{job.id}/scans").get_json()["rows"]
    return next(r["scan_id"] for r in rows if r["path"] == path)


def test_the_scan_page_says_it_in_words(signed_in, job):
    html = signed_in.get(f"/scans/{scan_id(signed_in, job, 'far.jpg')}").get_data(as_text=True)
    assert SENTENCE in html
    assert 'tumor-probability">0.910' in html  # the probability is still there
    within = signed_in.get(f"/scans/{scan_id(signed_in, job, 'near.jpg')}").get_data(as_text=True)
    assert "lies outside" not in within
    assert "Within the model's experience: distance from its training data 0.4 × its limit." in within
    unmeasured = signed_in.get(f"/scans/{scan_id(signed_in, job, 'old_a.jpg')}").get_data(as_text=True)
    assert "lies outside" not in unmeasured and "model's experience" not in unmeasured


def test_the_api_carries_the_score_and_the_flag(signed_in, job):
    rows = {r["path"]: r for r in signed_in.get(f"/api/jobs/{job.id}/scans").get_json()["rows"]}
    assert {p: (r["ood_score"], r["out_of_distribution"]) for p, r in rows.items()} == {
        "far.jpg": (1.7, True), "odd.jpg": (3.25, True), "near.jpg": (0.4, False),
        "edge.jpg": (1.0, False), "close.jpg": (0.2, False), "old_a.jpg": (None, None),
        "old_b.jpg": (None, None), "bad.jpg": (None, None)}
    (result,) = signed_in.get(f"/api/scans/{rows['far.jpg']['scan_id']}").get_json()["results"]
    assert (result["ood_score"], result["out_of_distribution"]) == (1.7, True)


def test_the_openapi_document_describes_the_filter_and_fields(signed_in):
    document = signed_in.get("/api/openapi.json").get_json()
    parameters = document["paths"]["/api/jobs/{job_id}/scans"]["get"]["parameters"]
    (ood,) = [p for p in parameters if p["name"] == "ood"]
    assert ood["in"] == "query" and ood["schema"]["enum"] == [0, 1]
    row = document["components"]["schemas"]["Row"]["properties"]
    assert row["ood_score"]["nullable"] and row["out_of_distribution"]["type"] == "boolean"


@pytest.mark.parametrize("score, text", [(1.7, "1.7"), (3.25, "3.25"), (0.4, "0.4"),
                                         (12.345, "12.3"), (1.0004, "1.0004"), (None, "–")])
def test_distances_are_written_plainly_and_never_rounded_into_the_limit(score, text):
    assert times_limit(score) == text


def test_a_multi_frame_scan_is_counted_once_and_filtered_by_frame(session, folders):
    from sqlalchemy import insert

    from worker.models import Result, Scan

    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    (series,) = seed.add_rows(session, job, [seed.Row("series.dcm", 0.2, ood_score=0.5)])
    first = session.query(Result).filter(Result.scan_id == series).one()
    template = {c.key: getattr(first, c.key) for c in Result.__table__.columns if c.key != "id"}
    session.execute(insert(Result), [{**template, "frame": 1, "ood_score": 2.0},
                                     {**template, "frame": 2, "ood_score": 4.0}])
    session.get(Scan, series).frames = 3
    session.commit()
    assert ood_counts(session, job.id) == OodCounts(measured=1, outside=1)
    outside = scan_rows(session, job.id, ScanFilter(ood=True), 1, 50).rows
    assert sorted(r.frame for r in outside) == [1, 2]
    assert [r.frame for r in scan_rows(session, job.id, ScanFilter(ood=False), 1, 50).rows] == [0]
