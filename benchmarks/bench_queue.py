"""Queued throughput on real Celery workers against ``scan --local``, and the walk's memory.

Throughput, in alternating rounds on the same folder and model (so load from other processes
falls on every variant alike), each round in a fresh SQLite store:

- local: the in-process job (``worker.local.run_local``, decoding and writing overlapped with
  the model), analyzer loaded and traced before timing;
- queued xN: ``tumorlens worker --concurrency N`` over a private Redis, every pool process warmed
  on other scans first; timed from enqueueing the job to its DONE row.

Memory: a worker that only walks (queue ``tumorlens.enumerate``) records and queues folders of
10 000 and 100 000 distinct placeholder files, nested 100 to a folder like a scanner archive and
flat in one folder; the walking process's peak RSS (VmHWM) is compared between the sizes.

    .venv/bin/python benchmarks/bench_queue.py [--scans 200] [--rounds 2] [--batch 16]
                                               [--files 10000,100000] [--only throughput|walk]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scan import save_model, scan_folder, time_job  # noqa: E402
from tests.builders.processes import (ProcessGroup, RedisServer, pool_children,  # noqa: E402
                                      start_worker, tumorlens_env, wait_for)
from tests.builders.scans import write_good_scans  # noqa: E402

MODEL = "small CNN 224 px"
FILES_PER_FOLDER = 100


def store(work: Path) -> str:
    """Create a fresh, migrated SQLite store under ``work``; return its URL."""
    from worker.db import upgrade

    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'store.db'}"
    upgrade(url)
    return url


def queue_job(url: str, folder: Path, spec, broker: str) -> int:
    """Record a job over ``folder`` and queue it; return its id."""
    from worker import jobs
    from worker.celery_app import create_celery_app
    from worker.db import make_session_factory, session_scope
    from worker.queue import enqueue_job
    from worker.settings import Settings

    with session_scope(make_session_factory(url)) as session:
        job_id = jobs.create_job(session, folder, spec, "gradcam").id
    enqueue_job(job_id, app=create_celery_app(Settings(broker_url=broker)))
    return job_id


def job_status(url: str, job_id: int) -> dict:
    from worker.db import make_session_factory, session_scope
    from worker.store import job_summary

    with session_scope(make_session_factory(url)) as session:
        return job_summary(session, job_id)


def wait_job(url: str, job_id: int, until: tuple[str, ...] = ("done",)) -> dict:
    """Poll the store until the job reaches one of ``until``; return its summary."""
    return wait_for(lambda: (s := job_status(url, job_id))["status"] in until and s,
                    f"job {job_id}", timeout=3600, every=0.05)


def has_model(process) -> bool:
    """Tell whether a pool process has TensorFlow (and so its model) loaded."""
    return any("libtensorflow" in m.path for m in process.memory_maps())


def time_queued(folder: Path, warm: Path, spec, work: Path, size: int, processes: int) -> float:
    """Time one job on ``folder`` through a fresh worker of ``processes`` pool processes."""
    group = ProcessGroup(work / "logs")
    try:
        redis = RedisServer(group, work / "redis").start()
        url = store(work / "store")
        env = tumorlens_env(work / "home", url, redis.url, output_dir=work / "out",
                            batch_size=size, model=spec.folder)
        worker = start_worker(group, env, concurrency=processes)
        for _ in range(5):  # warm each pool process: model loaded and traced
            wait_job(url, queue_job(url, warm, spec, redis.url))
            if all(has_model(p) for p in pool_children(worker)):
                break
        start = time.perf_counter()
        summary = wait_job(url, queue_job(url, folder, spec, redis.url))
        elapsed = time.perf_counter() - start
        assert summary["done"] + summary["duplicate"] == summary["scans"], summary
        return elapsed
    finally:
        group.close()


def throughput(tmp: Path, spec, scans: int, rounds: int, size: int) -> None:
    """Print scans per second of local and queued runs, and their ratios."""
    from pipeline.explain.analysis import Analyzer

    folder = tmp / "scans"
    source = scan_folder(folder, scans)
    warm = tmp / "warm"
    write_good_scans(warm, 8 * size, size=(256, 256), seed=7)  # other content: nothing reused
    analyzer = Analyzer(spec, "gradcam")
    time_job(warm, spec, analyzer, tmp / "warm-local", size, True)  # load and trace
    times: dict[str, list[float]] = {"local": [], "queued x1": [], "queued x2": []}
    for r in range(rounds):
        times["local"].append(time_job(folder, spec, analyzer, tmp / f"local-{r}", size, True))
        for n in (1, 2):
            times[f"queued x{n}"].append(time_queued(folder, warm, spec, tmp / f"q{n}-{r}", size, n))
    rates = {k: scans / statistics.median(v) for k, v in times.items()}
    print(f"throughput: {source}, {MODEL}, batch {size}, {os.cpu_count()} CPUs, "
          f"median of {rounds} rounds")
    for name, rate in rates.items():
        print(f"  {name:<10} {rate:7.1f} scans/s   {rate / rates['local']:5.2f}x local", flush=True)


def placeholders(folder: Path, count: int, nested: bool) -> Path:
    """Write ``count`` distinct tiny non-image files named like scans."""
    for i in range(count):
        parent = folder / f"series{i // FILES_PER_FOLDER:05d}" if nested else folder
        if i % FILES_PER_FOLDER == 0 or not nested:
            parent.mkdir(parents=True, exist_ok=True)
        (parent / f"img{i:06d}.dcm").write_bytes(i.to_bytes(8, "little"))
    return folder


def peak_rss_mib(process) -> float:
    """Return the peak resident memory (VmHWM) of a process in MiB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def walk_memory(folder: Path, spec, work: Path) -> tuple[float, float, float]:
    """Walk and queue ``folder`` in a fresh walking worker; return (seconds, base MiB, peak MiB)."""
    group = ProcessGroup(work / "logs")
    try:
        redis = RedisServer(group, work / "redis").start()
        url = store(work / "store")
        env = tumorlens_env(work / "home", url, redis.url, batch_size=16)
        worker = start_worker(group, env, "walker", 1, "--queues=tumorlens.enumerate")
        [child] = pool_children(worker)
        base = peak_rss_mib(child)
        start = time.perf_counter()
        wait_job(url, queue_job(url, folder, spec, redis.url), until=("running", "done"))
        return time.perf_counter() - start, base, peak_rss_mib(child)
    finally:
        group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--files", default="10000,100000", help="walk sizes, comma-separated")
    parser.add_argument("--only", choices=("throughput", "walk"), help="run one part")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as name:
        spec = save_model(Path(name) / "model", MODEL)
        if args.only != "walk":
            throughput(Path(name), spec, args.scans, args.rounds, args.batch)
        if args.only != "throughput":
            print("walk and queue of placeholder files, peak RSS of the walking process:")
            for layout in ("nested", "flat"):
                for count in map(int, args.files.split(",")):
                    walk_size(Path(name) / f"{layout}-{count}", spec, count, layout)


def walk_size(tmp: Path, spec, count: int, layout: str) -> None:
    """Print the walk's time and memory for ``count`` placeholder files in ``layout``."""
    folder = placeholders(tmp / "files", count, layout == "nested")
    seconds, base, peak = walk_memory(folder, spec, tmp)
    print(f"  {layout:<6} {count:>7} files  {seconds:6.1f} s  {count / seconds:7.0f} files/s  "
          f"peak {peak:6.1f} MiB (idle {base:.1f}, +{peak - base:.1f})", flush=True)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
