"""How much memory walking and recording a folder of a million files takes, flat and nested.

Each measurement runs ``worker.jobs.enumerate_job`` (walk, hash, record in chunks of 500) over
placeholder scans (tiny files with distinct content, named ``.png`` so the walk takes them without
opening them) into a fresh SQLite store, in a fresh process of its own, so that what one
measurement freed cannot hide what the next one takes. Its figure is the peak resident memory
during the call minus the resident memory just before it: VmRSS sampled every 2 ms by a thread,
and the kernel's own peak (VmHWM, reset through /proc/self/clear_refs) where the kernel allows
the reset. Target: at most 30 MiB of growth for each layout.

- flat: every file in one folder (the listing is sorted in runs on disk, ``SPILL_NAMES``);
- nested: folders of 1 000 files (listings small enough to sort in memory);
- resumed: the walk run again over a job whose scans are all recorded (an interrupted walk's
  continuation): the store is asked about each chunk, nothing is held for what it already has;
- held: the flat folder walked and recorded with the spill threshold out of reach, i.e. sorting
  the whole listing in memory as the walk did before (``--no-held`` skips it: a whole run);
- walk only: ``worker.walk.walk`` alone over the flat folder, spilled against held.

    .venv/bin/python benchmarks/bench_walk_memory.py [--files 1000000] [--per-folder 1000]
                                                     [--only flat|nested] [--no-held]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_MIB = 30
SAMPLE_SECONDS = 0.002


def placeholders(folder: Path, count: int, per_folder: int | None) -> float:
    """Write ``count`` distinct 8-byte files named like scans; return the seconds it took."""
    start = time.perf_counter()
    folder.mkdir(parents=True)
    parent = folder
    for i in range(count):
        if per_folder and i % per_folder == 0:
            parent = folder / f"series{i // per_folder:05d}"
            parent.mkdir()
        fd = os.open(parent / f"img{i:07d}.png", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, i.to_bytes(8, "little"))
        os.close(fd)
    return time.perf_counter() - start


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


class PeakSampler:
    """Track this process's peak resident memory from a thread, while a block runs."""

    def __enter__(self) -> PeakSampler:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.base = self.peak = status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, status_kib("VmRSS"))

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_kib("VmRSS"), status_kib("VmHWM") if self.hwm_reset else 0)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024


def placeholder_spec(folder: Path):
    """Describe a model file that is never loaded: enumeration only needs the job's model row."""
    from pipeline.model.spec import load_spec, write_spec

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.keras").write_bytes(b"never loaded")
    write_spec({"name": "placeholder", "file": "model.keras", "input_size": [32, 32],
                "color_mode": "rgb", "preprocessing": "unit", "class_names": ["no_tumor", "tumor"],
                "positive_classes": ["tumor"], "output": "probabilities"}, folder)
    return load_spec(folder)


def measure(kind: str, folder: Path, work: Path, held: bool) -> dict:
    """Run one measurement in this process; return its figures (called in a fresh child)."""
    from sqlalchemy import func, select, update

    from worker import jobs, walk
    from worker.db import make_session_factory, session_scope, upgrade
    from worker.models import Job, JobStatus, Scan

    if held:
        walk.SPILL_NAMES = sys.maxsize
    url = f"sqlite:///{work / 'store.db'}"
    if kind == "resume":  # the store of the record run: every scan is already there
        with session_scope(factory := make_session_factory(url)) as session:
            job_id = session.scalar(select(Job.id))
            session.execute(update(Job).values(status=JobStatus.ENUMERATING))
    elif kind == "record":
        upgrade(url)
        with session_scope(factory := make_session_factory(url)) as session:
            job_id = jobs.create_job(session, folder, placeholder_spec(work / "model"), "gradcam").id
    start = time.perf_counter()
    with PeakSampler() as memory:
        if kind == "walk":
            new = sum(1 for _ in walk.walk(folder))
        else:
            new = sum(len(ids) for ids in jobs.enumerate_job(factory, job_id))
    seconds = time.perf_counter() - start
    recorded = new
    if kind != "walk":
        with session_scope(factory) as session:
            recorded = session.scalar(select(func.count()).select_from(Scan).where(Scan.job_id == job_id))
    return {"seconds": seconds, "growth": memory.growth_mib, "base": memory.base / 1024,
            "new": new, "recorded": recorded, "hwm": memory.hwm_reset}


def run_child(kind: str, folder: Path, work: Path, held: bool = False) -> dict:
    """Run ``measure`` in a fresh interpreter and return its figures."""
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--work", str(work)]
    env = {**os.environ, "TUMORLENS_HOME": str(work / "home"), "TMPDIR": str(work)}
    done = subprocess.run(command + (["--held"] if held else []), cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def show(label: str, figures: dict, count: int, ratio_to: dict | None = None) -> None:
    ratio = f"  {figures['growth'] / max(ratio_to['growth'], 0.1):5.1f}x" if ratio_to else ""
    verdict = "" if ratio_to else ("  ok" if figures["growth"] <= TARGET_MIB else f"  OVER {TARGET_MIB} MiB")
    print(f"  {label:<22} +{figures['growth']:7.1f} MiB (from {figures['base']:5.1f})"
          f"  {figures['seconds']:7.1f} s  {count / figures['seconds']:8.0f} files/s"
          f"  {figures['new']:>8} new, {figures['recorded']:>8} recorded{ratio}{verdict}", flush=True)


def bench_layout(tmp: Path, layout: str, count: int, per_folder: int, held: bool) -> None:
    """Create one layout, print its measurements, remove it."""
    folder = tmp / layout / "files"
    seconds = placeholders(folder, count, per_folder if layout == "nested" else None)
    shape = f"{count // per_folder} folders x {per_folder}" if layout == "nested" else "one folder"
    print(f"{layout}: {count} files in {shape} (written in {seconds:.0f} s)", flush=True)
    record = run_child("record", folder, tmp / layout / "record")
    show("walk + record", record, count)
    show("resumed walk + record", run_child("resume", folder, tmp / layout / "record"), count)
    if layout == "flat":
        if held:
            show("held (old), + record", run_child("record", folder, tmp / layout / "held", True),
                 count, record)
        spilled = run_child("walk", folder, tmp / layout / "walk")
        show("walk only, spilled", spilled, count)
        show("walk only, held (old)", run_child("walk", folder, tmp / layout / "walk", True),
             count, spilled)
    subprocess.run(["rm", "-rf", str(tmp / layout)], check=True)  # faster than shutil on 1M files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--per-folder", type=int, default=1000, help="files per nested folder")
    parser.add_argument("--only", choices=("flat", "nested"), help="one layout")
    parser.add_argument("--no-held", dest="held", action="store_false",
                        help="skip recording with the old in-memory sort (a whole extra run)")
    parser.add_argument("--child", choices=("record", "resume", "walk"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--held", dest="held_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.folder, args.work, args.held_child)))
        return
    start = time.perf_counter()
    print(f"peak RSS growth of each run over its RSS before it (target <= {TARGET_MIB} MiB), "
          f"{os.cpu_count()} CPUs; ratio = held / spilled")
    with tempfile.TemporaryDirectory(prefix="bench-walk-memory-") as name:
        for layout in ("flat", "nested") if args.only is None else (args.only,):
            bench_layout(Path(name), layout, args.files, args.per_folder, args.held)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
