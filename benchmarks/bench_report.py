"""Time the first page of a 10 000-scan report against a trivial page, side by side.

Seeds one finished job of N scans with results straight into a fresh SQLite store (and a fresh
PostgreSQL database when the server at 127.0.0.1:5432 answers), then requests report pages and
``/healthz`` (one ``SELECT 1``: the trivial baseline) in alternating order, through Flask's test
client and through a real HTTP server in a thread. Prints medians, the 90th percentile and the
ratio report/baseline; the target for the report's first page is 150 ms.

    .venv/bin/python benchmarks/bench_report.py [--scans 10000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.web import seed  # noqa: E402
from tests.web.browser import served  # noqa: E402
from worker.models import ScanStatus  # noqa: E402

TARGET_MS = 150.0
PAGES = {  # what a person does first on a report, then the costlier views
    "first page (probability, high first)": "/jobs/{job}",
    "sorted by path, page 2": "/jobs/{job}?sort=path&order=asc&page=2",
    "filtered p>=0.5 and path text": "/jobs/{job}?min_p=0.5&q=YES",
    "last page (offset 9950)": "/jobs/{job}?page=200",
    "API rows, first page": "/api/jobs/{job}/scans",
}
BASELINE = "/healthz"


def rows(count: int) -> list[seed.Row]:
    """Return ``count`` rows: 2 % failed, the rest with spread probabilities."""
    out = []
    for i in range(count):
        folder = "YES" if i % 2 else "NO"
        if i % 50 == 0:
            out.append(seed.Row(f"{folder}/s{i:05d}.jpg", None, ScanStatus.FAILED, "damaged file"))
        else:
            out.append(seed.Row(f"{folder}/s{i:05d}.jpg", (i * 7919 % 10007) / 10007))
    return out


def prepare(url: str, workdir: Path, count: int):
    """Migrate the store, seed a user and a job of ``count`` scans; return (app, job id, user id)."""
    from web import create_app
    from worker.db import make_session_factory, upgrade

    upgrade(url)
    model = seed.write_model(workdir / "model")
    with make_session_factory(url)() as session:
        user = seed.add_user(session, "bench", "bench-password")
        job = seed.add_job(session, workdir, model)
        started = time.perf_counter()
        seed.add_rows(session, job, rows(count))
        seed.add_neuron_stats(session, job, [((i * 37) % 101 - 50) / 50 for i in range(2048)])
        session.commit()
        print(f"  seeded {count} scans in {time.perf_counter() - started:.1f} s")
        job_id = job.id
    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "bench",
                      "OUTPUT_DIR": workdir / "outputs", "SCAN_ROOTS": [workdir],
                      "DEFAULT_MODEL": model})
    return app, job_id, user


def signed_in_client(app, user_id: int):
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
    return client


def timer(get: Callable[[str], int]) -> Callable[[str], float]:
    """Wrap a GET so that it returns milliseconds and checks the answer is 200."""
    def timed(path: str) -> float:
        started = time.perf_counter()
        status = get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise SystemExit(f"{path} answered {status}")
        return elapsed
    return timed


def via_test_client(client) -> Callable[[str], int]:
    return lambda path: client.get(path).status_code


def via_http(base: str, cookie: str) -> Callable[[str], int]:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def get(path: str) -> int:
        connection.request("GET", path, headers={"Cookie": f"tumorlens_session={cookie}"})
        response = connection.getresponse()
        response.read()
        return response.status
    return get


def measure(timed: Callable[[str], float], path: str, repeat: int) -> tuple[list[float], list[float]]:
    """Alternate the page and the baseline ``repeat`` times (after a warm-up of each)."""
    timed(path), timed(BASELINE)
    page, base = [], []
    for _ in range(repeat):
        page.append(timed(path))
        base.append(timed(BASELINE))
    return page, base


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def report(label: str, timed: Callable[[str], float], job: int, repeat: int) -> list[float]:
    """Print one block of figures; return the first page's medians."""
    print(f"  {label}:")
    print(f"    {'page':40s} {'median':>8s} {'p90':>8s} {'baseline':>9s} {'ratio':>6s}")
    firsts = []
    for name, template in PAGES.items():
        page, base = measure(timed, template.format(job=job), repeat)
        median, base_median = statistics.median(page), statistics.median(base)
        print(f"    {name:40s} {median:7.1f}ms {p90(page):7.1f}ms {base_median:8.1f}ms "
              f"{median / base_median:5.1f}x")
        if name.startswith("first page"):
            firsts.append(median)
    return firsts


@contextmanager
def sqlite_store(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'bench.db'}"


@contextmanager
def postgres_store() -> Iterator[str | None]:
    """Yield a fresh PostgreSQL database URL (dropped afterwards), or None when unreachable."""
    import psycopg

    from tests.conftest import _postgres_admin_url
    from worker.db import dispose_engines

    admin = _postgres_admin_url()
    if admin is None:
        yield None
        return
    name = f"tumorlens_bench_{int(time.time())}"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin}/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_backend(label: str, url: str, workdir: Path, count: int, repeat: int) -> list[float]:
    print(f"\n{label}")
    app, job, user = prepare(url, workdir, count)
    client = signed_in_client(app, user)
    firsts = report("Flask test client (server-side only)", timer(via_test_client(client)), job, repeat)
    cookie = client.get_cookie("tumorlens_session").value
    with served(app) as base:
        firsts += report("real HTTP server (werkzeug, one keep-alive connection)",
                         timer(via_http(base, cookie)), job, repeat)
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    firsts = []
    with tempfile.TemporaryDirectory() as tmp:
        with sqlite_store(Path(tmp)) as url:
            firsts += run_backend("SQLite", url, Path(tmp), args.scans, args.repeat)
    with tempfile.TemporaryDirectory() as tmp, postgres_store() as url:
        if url is None:
            print("\nPostgreSQL: not reachable at 127.0.0.1:5432, skipped")
        else:
            firsts += run_backend("PostgreSQL", url, Path(tmp), args.scans, args.repeat)
    worst = max(firsts)
    verdict = "meets" if worst <= TARGET_MS else "MISSES"
    print(f"\nslowest first-page median {worst:.1f} ms {verdict} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
