"""On-demand overlays: disk per scan, the cost of drawing one, and the scan page's first view.

One run, side by side:

1. disk: the same folder of 512 x 512 slices scanned twice with the shipped default model, once
   with the default (overlays on demand) and once with ``--overlays eager``; per analysed scan, the
   job's output files (apparent bytes and the disk blocks they take) and the store's growth;
2. drawing: CPU time to draw one overlay from the source file and the stored map, as the web does
   (hash check, decode, upsample, blend, PNG), against writing it eagerly from pixels in memory;
3. first view: a real ``tumorlens web`` (a subprocess, the on-demand job's store) signed in over
   HTTP; the scan page's first view (the overlay drawn and cached) and the overlay's request
   after it, against a second view of the same page (nothing left to draw).

Slices: Br35H scans resized to 512 x 512 from ``../shared/data`` when present, else synthetic.

    .venv/bin/python benchmarks/bench_overlays.py [--scans 300] [--views 40]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "br35h"
SIDE = 512


def slices(folder: Path, count: int) -> str:
    """Write ``count`` 512 x 512 PNG slices into ``folder``; return where they came from."""
    from PIL import Image

    folder.mkdir(parents=True)
    sources = sorted((SHARED / "yes").iterdir())[:count // 2] + sorted((SHARED / "no").iterdir())
    sources = sources[:count] if (SHARED / "yes").is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(count):
        if sources:
            with Image.open(sources[i]) as image:
                gray = image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
        else:
            gray = Image.fromarray(rng.integers(0, 255, (SIDE, SIDE), np.uint8))
        gray.save(folder / f"slice{i:05d}.png")
    return f"{count} Br35H scans at {SIDE} px" if sources else f"{count} synthetic {SIDE} px slices"


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORLENS_")}
    env.update(TUMORLENS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def tumorlens(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "tumorlens"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout


def disk(home: Path) -> tuple[int, int, int, int]:
    """Return (files' bytes, their blocks' bytes, store bytes, results) of a home's one job."""
    import sqlite3

    files = [p for p in (home / "outputs").rglob("*") if p.is_file()]
    apparent = sum(p.stat().st_size for p in files)
    blocks = sum(p.stat().st_blocks * 512 for p in files)
    with sqlite3.connect(home / "tumorlens.db") as db:
        results = db.execute("select count(*) from results").fetchone()[0]
    store = sum(p.stat().st_size for p in home.glob("tumorlens.db*"))
    return apparent, blocks, store, results


def empty_store(home: Path) -> int:
    """Return the bytes a store takes before any job (its schema)."""
    tumorlens(env_for(home), "db", "upgrade")
    return sum(p.stat().st_size for p in home.glob("tumorlens.db*"))


def measure_disk(work: Path, folder: Path) -> dict[str, Path]:
    homes = {}
    base = empty_store(work / "base")
    print(f"{'overlays':10} {'files/scan':>11} {'on disk/scan':>13} {'store/scan':>11} {'total/scan':>11}")
    for mode in ("on-demand", "eager"):
        home = homes[mode] = work / mode
        tumorlens(env_for(home), "scan", str(folder), "--local", "--overlays", mode)
        apparent, blocks, store, n = disk(home)
        per = lambda b: b / n / 1024  # noqa: E731
        print(f"{mode:10} {per(apparent):8.1f} KiB {per(blocks):10.1f} KiB {per(store - base):8.1f} KiB "
              f"{per(blocks + store - base):8.1f} KiB")
    return homes


def measure_drawing(home: Path, folder: Path) -> None:
    """Time drawing from file (the web's path) against the eager write, per scan, CPU ms."""
    from pipeline.explain.overlay import write_outputs
    from pipeline.io.overlays import overlay_png, source_frames
    from pipeline.io.scans import read_scan, sha256_file

    heatmaps = sorted((home / "outputs").rglob("*.heatmap.npz"))
    drawn, eager = [], []
    scratch = Path(tempfile.mkdtemp())
    for heatmap in heatmaps:
        source = folder / heatmap.name.removesuffix(".heatmap.npz")
        digest = sha256_file(source)
        start = time.process_time()
        pixels = source_frames(source, digest)[0]
        with np.load(heatmap) as stored:
            png = overlay_png(pixels, stored["cam"])
        drawn.append(time.process_time() - start)
        pixels, cam = read_scan(source)[0].pixels, np.load(heatmap)["cam"]
        start = time.process_time()
        written = write_outputs(scratch / source.name, pixels, cam, overlay=True)
        eager.append(time.process_time() - start)
        assert written.overlay.read_bytes() == png
    shutil.rmtree(scratch)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"drawing one {SIDE}x{SIDE} overlay from file (hash, decode, blend, PNG): {ms(drawn):.1f} ms CPU "
          f"median, p95 {1000 * np.percentile(drawn, 95):.1f} ms; eager write of all outputs from pixels "
          f"in memory: {ms(eager):.1f} ms (ratio {ms(drawn) / ms(eager):.2f}); bytes identical")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_views(home: Path, views: int) -> None:
    import requests

    env = {**env_for(home), "TUMORLENS_WEB_SESSION_COOKIE_SECURE": "false"}  # plain HTTP here
    tumorlens(env, "user", "create", "bench", "--password", "bench-password")
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "tumorlens"), "web", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        http = requests.Session()
        for _ in range(300):
            try:
                page = http.get(f"{base}/login", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page.text).group(1)
        http.post(f"{base}/login", data={"username": "bench", "password": "bench-password",
                                         "csrf_token": token}, timeout=30)
        scans = [int(m) for m in re.findall(r'href="/scans/(\d+)', http.get(f"{base}/jobs/1").text)]
        scans = list(dict.fromkeys(scans))[:views]
        if not scans:
            raise SystemExit("the report page lists no scans: was the sign-in refused?")
        first, image, second = [], [], []
        for scan_id in scans:
            start = time.perf_counter()
            html = http.get(f"{base}/scans/{scan_id}", timeout=30).text
            first.append(time.perf_counter() - start)
            url = re.search(r'id="img-overlay" src="([^"]+)"', html).group(1)
            start = time.perf_counter()
            assert http.get(base + url, timeout=30).content[:4] == b"\x89PNG"
            image.append(time.perf_counter() - start)
            start = time.perf_counter()
            http.get(f"{base}/scans/{scan_id}", timeout=30)
            second.append(time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(30)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    p95 = lambda xs: 1000 * float(np.percentile(xs, 95))  # noqa: E731
    print(f"scan page over HTTP, {len(scans)} scans: first view (overlay drawn) {ms(first):.0f} ms median, "
          f"p95 {p95(first):.0f} ms; then the overlay image (cached) {ms(image):.0f} ms; second view "
          f"{ms(second):.0f} ms (first/second {ms(first) / ms(second):.2f}); first view + image "
          f"{ms(first) + ms(image):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=300)
    parser.add_argument("--views", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-overlays-"))
    try:
        folder = work / "slices"
        print(f"{slices(folder, args.scans)}, default model, one run")
        homes = measure_disk(work, folder)
        measure_drawing(homes["on-demand"], folder)
        measure_views(homes["on-demand"], args.views)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
