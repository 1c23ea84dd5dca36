"""The report: filters, sorting, pagination and neighbours on seeded rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re

import pytest

from tests.web import seed
from tests.web.conftest import PASSWORD, sign_in
from web.filters import FilterError, ScanFilter
from web.queries import neighbours, scan_rows
from worker.models import JobStatus, ScanStatus

XSS = "<script>alert(1)</script>.jpg"


def corpus() -> list[seed.Row]:
    """Twenty rows with distinct probabilities, three failures, two duplicates, awkward names."""
    rows = [seed.Row(f"{'YES' if i % 2 else 'NO'}/scan_{i:02d}.jpg", round(0.05 * i + 0.01, 2))
            for i in range(20)]
    rows += [seed.Row("NO/broken_%.jpg", None, ScanStatus.FAILED, "truncated JPEG: the file ends early"),
             seed.Row("YES/empty.jpg", None, ScanStatus.FAILED, "not an image: the file is empty"),
             seed.Row(XSS, None, ScanStatus.FAILED, "<b>bold</b> & broken"),
             seed.Row("copy/scan_03.jpg", None, ScanStatus.DUPLICATE),
             seed.Row("copy/scan_1_.jpg", None, ScanStatus.DUPLICATE)]
    return rows


@pytest.fixture
def job(session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    seed.add_rows(session, job, corpus())
    seed.add_neuron_stats(session, job, [0.1, -0.8, 0.9, 0.0, -0.2, 0.5])
    session.commit()
    return job


@pytest.fixture
def store_app(make_app, database_url):
    return make_app(url=database_url, REPORT_PAGE_SIZE=7)


@pytest.fixture
def store_job(store_session, folders):
    return seed.seeded_job(store_session, folders, corpus())


def expected(flt: ScanFilter) -> list[str]:
    """Compute the report order of corpus() in Python: the specification the queries must meet."""
    rows = [r for r in corpus() if _matches(r, flt)]
    ids = {r.path: i for i, r in enumerate(corpus())}  # scan ids follow insertion order
    missing = -1.0 if flt.descending else 2.0
    key = {"probability": lambda r: r.probability if r.probability is not None else missing,
           "path": lambda r: r.path, "status": lambda r: r.status.value}[flt.sort]
    return [r.path for r in sorted(rows, key=lambda r: (key(r), ids[r.path]), reverse=flt.descending)]


def _matches(row: seed.Row, flt: ScanFilter) -> bool:
    p = row.probability
    predicted = None if p is None else ("tumor" if p >= 0.5 else "no_tumor")
    return all([flt.min_p is None or (p is not None and p >= flt.min_p),
                flt.max_p is None or (p is not None and p <= flt.max_p),
                flt.predicted is None or predicted == flt.predicted,
                flt.status is None or row.status.value == flt.status,
                flt.text is None or flt.text.lower() in row.path.lower()])


FILTERS = [
    ScanFilter(),
    ScanFilter(order="asc"),
    ScanFilter(sort="path", order="asc"),
    ScanFilter(sort="path", order="desc"),
    ScanFilter(sort="status", order="asc"),
    ScanFilter(min_p=0.3, max_p=0.71),
    ScanFilter(predicted="tumor", order="asc"),
    ScanFilter(status="failed", sort="path", order="asc"),
    ScanFilter(text="yes/"),
    ScanFilter(text="_%"),  # LIKE wildcards are matched literally
    ScanFilter(text="1_"),
    ScanFilter(min_p=0.5, predicted="no_tumor"),
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: json.dumps(f.to_args()))
def test_rows_follow_filter_sort_and_pages(store_session, store_job, flt):
    want = expected(flt)
    got, page_no = [], 1
    while True:
        page = scan_rows(store_session, store_job.id, flt, page_no, 4)
        assert page.total == len(want)
        got += [row.path for row in page.rows]
        if page_no >= page.pages:
            break
        page_no += 1
    assert got == want
    assert page.pages == max(1, -(-len(want) // 4))


def test_a_page_past_the_end_shows_the_last(store_session, store_job):
    page = scan_rows(store_session, store_job.id, ScanFilter(), 99, 10)
    assert page.page == 3 and [r.path for r in page.rows] == expected(ScanFilter())[20:]


@pytest.mark.parametrize("flt", FILTERS[:8], ids=lambda f: json.dumps(f.to_args()))
def test_neighbours_walk_the_same_order(store_session, store_job, flt):
    want = expected(flt)
    rows = scan_rows(store_session, store_job.id, flt, 1, 100).rows
    for i, row in enumerate(rows):
        prev, nxt = neighbours(store_session, store_job.id, flt, row.scan_id, row.frame)
        by_id = {r.scan_id: r.path for r in rows}
        assert (by_id[prev.scan_id] if prev else None) == (want[i - 1] if i else None)
        assert (by_id[nxt.scan_id] if nxt else None) == (want[i + 1] if i + 1 < len(want) else None)


@pytest.mark.parametrize("args, message", [
    ({"min_p": "abc"}, "must be a number"), ({"max_p": "1.5"}, "between 0 and 1"),
    ({"min_p": "nan"}, "between 0 and 1"), ({"min_p": "0.8", "max_p": "0.2"}, "above the highest"),
    ({"sort": "size; drop table scans"}, "sort must be one of"), ({"status": "weird"}, "status must"),
    ({"q": "x" * 201}, "longer than"),
])
def test_bad_filters_are_explained(args, message):
    with pytest.raises(FilterError, match=message):
        ScanFilter.from_args(args)


def _page_paths(html: str) -> list[str]:
    import html as html_lib

    return [html_lib.unescape(p) for p in re.findall(r'class="scan-link">([^<]*)</a>', html)]


def test_report_page_shows_sorted_filtered_page(store_app, store_job, user_id_store):
    client = store_app.test_client()
    sign_in(client, "alice", PASSWORD)
    html = client.get(f"/jobs/{store_job.id}?sort=path&order=asc&page=2").get_data(as_text=True)
    assert _page_paths(html) == expected(ScanFilter(sort="path", order="asc"))[7:14]
    assert 'rel="next"' in html and 'rel="prev"' in html
    assert "25 matching rows" in html
    api = client.get(f"/api/jobs/{store_job.id}/scans?sort=path&order=asc&page=2").get_json()
    assert [r["path"] for r in api["rows"]] == _page_paths(html)
    assert api["total"] == 25 and api["pages"] == 4


@pytest.fixture
def user_id_store(store_session) -> int:
    return seed.add_user(store_session, "alice", PASSWORD)


def test_bad_filter_on_the_page_is_flashed_and_api_says_400(signed_in, job):
    page = signed_in.get(f"/jobs/{job.id}?min_p=abc").get_data(as_text=True)
    assert "min_p must be a number" in page and len(_page_paths(page)) == 25
    api = signed_in.get(f"/api/jobs/{job.id}/scans?min_p=abc")
    assert api.status_code == 400 and "min_p" in api.get_json()["error"]


def test_hostile_names_and_errors_show_as_text(signed_in, job):
    html = signed_in.get(f"/jobs/{job.id}?status=failed").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; broken" in html and "<b>bold</b>" not in html
    scan_id = [r["scan_id"] for r in signed_in.get(f"/api/jobs/{job.id}/scans?status=failed")
               .get_json()["rows"] if r["path"] == XSS][0]
    page = signed_in.get(f"/scans/{scan_id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_summary_counts_chart_and_failures(signed_in, job, session):
    job_row = session.get(type(job), job.id)
    job_row.model.card = {"test": {"accuracy": 0.931, "auc": 0.97}, "notes": "text is skipped"}
    session.commit()
    html = signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert re.search(r'data-field="done">20<', html) and re.search(r'data-field="failed">3<', html)
    assert re.search(r'data-field="flagged">10<', html)  # probabilities 0.51 .. 0.96
    assert "test · accuracy" in html and "0.931" in html
    assert "Failed scans (3)" in html and "not an image: the file is empty" in html
    svg = html.split("<svg class=\"chart\"")[1].split("</svg>")[0]
    assert re.findall(r"neuron (\d+)</text>", svg) == ["2", "5", "0", "4", "1"]
    assert "+0.900" in svg and "-0.800" in svg


def test_job_api_progress_and_neurons(signed_in, job):
    body = signed_in.get(f"/api/jobs/{job.id}").get_json()
    assert body["status"] == "done" and body["finished"] is True
    assert {k: body["progress"][k] for k in ("total", "done", "failed", "duplicate", "flagged")} == \
        {"total": 25, "done": 20, "failed": 3, "duplicate": 2, "flagged": 10}
    assert body["progress"]["fraction"] == 1.0
    neurons = signed_in.get(f"/api/jobs/{job.id}/neurons?top=2").get_json()
    assert [n["neuron"] for n in neurons["top_positive"]] == [2, 5]
    assert [n["neuron"] for n in neurons["top_negative"]] == [1, 4]
    listing = signed_in.get("/api/jobs").get_json()
    assert [j["id"] for j in listing["jobs"]] == [job.id]


def test_running_job_shows_rate_and_eta(signed_in, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", JobStatus.RUNNING)
    seed.add_rows(session, job, [seed.Row(f"s{i}.jpg", 0.2) for i in range(30)]
                  + [seed.Row(f"p{i}.jpg", None, ScanStatus.PENDING) for i in range(10)])
    session.commit()
    progress = signed_in.get(f"/api/jobs/{job.id}").get_json()["progress"]
    assert progress["fraction"] == pytest.approx(0.75)
    assert progress["rate"] == pytest.approx(0.5, rel=0.05)  # 30 scans in about a minute
    assert progress["eta_seconds"] == pytest.approx(20, rel=0.05)
    html = signed_in.get("/jobs").get_data(as_text=True)
    assert 'data-finished="0"' in html and "scans/s" in html and "left" in html


def test_exports_stream_what_the_cli_writes(signed_in, job, session, app):
    from worker.export import export_job

    for fmt in ("csv", "json"):
        response = signed_in.get(f"/api/jobs/{job.id}/export?format={fmt}")
        assert response.status_code == 200 and response.is_streamed
        assert f"tumorlens-job-{job.id}.{fmt}" in response.headers["Content-Disposition"]
        cli = io.StringIO()
        export_job(session, job.id, app.config["OUTPUT_DIR"], fmt, cli)
        assert response.get_data(as_text=True) == cli.getvalue()
    rows = json.loads(signed_in.get(f"/api/jobs/{job.id}/export?format=json").get_data(as_text=True))
    assert len(rows) == 25
    assert signed_in.get(f"/api/jobs/{job.id}/export?format=xml").status_code == 400


def test_unknown_ids_answer_404(signed_in):
    for url in ("/jobs/999", "/scans/999", "/results/999/overlay.png", "/results/999/heatmap.png",
                "/scans/999/original.png"):
        assert signed_in.get(url).status_code == 404, url
    for url in ("/api/jobs/999", "/api/jobs/999/scans", "/api/scans/999", "/api/jobs/999/neurons"):
        response = signed_in.get(url)
        assert response.status_code == 404 and "error" in response.get_json(), url


def test_multi_frame_scan_gives_a_row_per_frame(signed_in, session, folders):
    from sqlalchemy import insert

    from worker.models import Result, Scan

    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    (scan_id,) = seed.add_rows(session, job, [seed.Row("series.dcm", 0.2)])
    first = session.query(Result).filter(Result.scan_id == scan_id).one()
    template = {c.key: getattr(first, c.key) for c in Result.__table__.columns if c.key != "id"}
    session.execute(insert(Result), [{**template, "frame": f, "tumor_probability": p}
                                     for f, p in ((1, 0.9), (2, 0.5))])
    session.get(Scan, scan_id).frames = 3
    session.commit()
    html = signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert re.findall(r"frame (\d) of 3", html) == ["2", "3", "1"]  # by probability, high first
    page = signed_in.get(f"/scans/{scan_id}?frame=2").get_data(as_text=True)
    assert "frame 3 of 3" in page and 'tumor-probability">0.500' in page
    nav = re.search(r'id="scan-nav"([^>]*)>', page).group(1)
    assert f"scans/{scan_id}?frame=1" in nav and f"scans/{scan_id}?frame=0" in nav


def test_a_job_failed_by_its_model_shows_why_on_its_page(signed_in, session, folders):
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json", status=JobStatus.FAILED)
    job.error = ('the model test-model cannot be analysed: the model has 2 outputs (0 "diagnosis" '
                 '(batch, 2); 1 "grade" (batch, 3)); set "model_output" in model.json')
    seed.add_rows(session, job, [seed.Row("a.jpg", status=ScanStatus.PENDING)])
    session.commit()
    html = signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
    assert "the model test-model cannot be analysed" in html
    assert "set &#34;model_output&#34; in model.json" in html  # escaped like every stored text


def test_the_job_page_names_the_models_operating_point(signed_in, session, job):
    assert "when P(tumor) ≥ 0.5 " in signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
    job.model.spec = {**job.model.spec, "threshold": 0.37}
    session.commit()
    assert "when P(tumor) ≥ 0.37 " in signed_in.get(f"/jobs/{job.id}").get_data(as_text=True)
