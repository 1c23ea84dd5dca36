"""End-to-end ``scan --local`` against bare ``model.predict``, side by side on the same scans.

For each model, in alternating rounds (so load from other processes falls on both alike):

- predict: ``model.predict`` on the scans already decoded and preprocessed (the ceiling);
- scan: the in-process job on the same folder with the same model, as ``scan --local`` runs it
  (overlays on demand, the default): walk and hash, decode, the fused pass (probabilities +
  Grad-CAM + neuron vectors), thumbnail and heatmap files, rows in SQLite, one transaction per
  batch, with decoding and writing overlapped;
- eager (``--eager``): the same with ``--overlays eager``, the full-size overlay PNG written too;
- serial: the same job's stages one batch after another, as ``process_batch`` runs them (what
  the overlap buys), each stage timed in wall and CPU time: where a scan's time goes.

Each variant's CPU time per scan is printed too, with the cores it kept busy on average: on a
shared machine a variant that got less than the 2 cores shows it there. For the overlapped scan,
"model busy" is the share of its wall time the main thread spent in the model's pass (the rest it
waited: the walk, a batch not yet decoded, writers behind), and its pass's ms per scan against
the serial run's (slower there: the other threads took cores from it).

Models: a 4-layer CNN at 224 px and an Xception-based classifier at 150 px (random weights: speed
does not depend on them), and the shipped default model (``models/default``), as ``scan`` runs it.
The model is loaded and traced before timing in every variant. Scans: Br35H JPEGs from
``../shared/data`` when present (half from yes/, half from no/, content duplicates left out; past
the ~3,000 distinct files each further copy gets a distinct trailing byte after the JPEG's end,
so it is analysed, not skipped as a duplicate), else synthetic ones of similar sizes.

    .venv/bin/python benchmarks/bench_scan.py [--scans 200] [--rounds 2] [--batch 16]
        [--only small|xception|default] [--eager]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "br35h"


def scan_folder(folder: Path, count: int) -> str:
    """Fill ``folder`` with ``count`` scans of distinct content; return where they came from."""
    folder.mkdir(parents=True)
    if (SHARED / "yes").is_dir():
        return _br35h(folder, count)
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        side = int(rng.integers(200, 700))
        Image.fromarray(rng.integers(0, 255, (side, side), np.uint8)).save(folder / f"s{i}.jpg")
    return f"{count} synthetic JPEGs (../shared/data is absent)"


def _br35h(folder: Path, count: int) -> str:
    seen: set[str] = set()
    sides = []
    for side in ("yes", "no"):
        files = []
        for path in sorted((SHARED / side).iterdir()):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in seen:
                seen.add(digest)
                files.append((path.name, data))
        sides.append(files)
    half = min(count // 2, len(sides[0]))
    picked = sides[0][:half] + sides[1][:count - half]
    distinct = len(picked)
    for i in range(count - distinct):  # copies past the distinct files: one trailing byte each
        name, data = picked[i % distinct]
        picked.append((f"c{i}-{name}", data + bytes([i // distinct % 256]) * (1 + i // distinct)))
    for name, data in picked:
        (folder / name).write_bytes(data)
    copies = f" ({count - distinct} of them copies with a distinct trailing byte)" if count > distinct else ""
    return f"{count} Br35H JPEGs{copies}"


def small_cnn(keras, size: int):
    conv = dict(kernel_size=3, padding="same", activation="relu")
    return keras.Sequential([
        keras.Input((size, size, 3)), keras.layers.Conv2D(16, **conv), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, **conv), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, **conv), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, **conv, name="last_conv"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax")], name="small_cnn")


def xception(keras, size: int):
    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x), name="xception_cls")


MODELS = {"small CNN 224 px": (small_cnn, 224, "unit"), "Xception 150 px": (xception, 150, "symmetric"),
          "default model": (None, None, None)}  # the shipped models/default, as `scan` runs it


def save_model(folder: Path, name: str):
    """Build, save and describe one benchmark model; return its spec."""
    import keras

    from pipeline.model.spec import load_spec, write_spec

    build, size, preprocessing = MODELS[name]
    if build is None:
        return load_spec(ROOT / "models" / "default")
    keras.utils.set_random_seed(0)
    folder.mkdir(parents=True)
    build(keras, size).save(folder / "model.keras")
    write_spec({"name": name, "file": "model.keras", "input_size": [size, size], "color_mode": "rgb",
                "preprocessing": preprocessing, "class_names": ["no_tumor", "tumor"],
                "positive_classes": ["tumor"], "output": "probabilities"}, folder)
    return load_spec(folder)


def prepared(folder: Path, analyzer) -> np.ndarray:
    """Decode and preprocess every scan once, outside any timing."""
    from pipeline.io.scans import read_scan

    return np.stack([analyzer.prepare(read_scan(p)[0].pixels) for p in sorted(folder.iterdir())])


def time_predict(model, batch: np.ndarray, size: int) -> float:
    start = time.perf_counter()
    model.predict(batch, batch_size=size, verbose=0)
    return time.perf_counter() - start


def time_job(folder: Path, spec, analyzer, work: Path, size: int, overlapped: bool,
             overlays: str = "on-demand") -> float:
    """Run one fresh job on ``folder``; return its wall time from walk to finalisation."""
    from worker import jobs
    from worker.db import make_session_factory, session_scope, upgrade
    from worker.local import run_local

    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'store.db'}"
    upgrade(url)
    factory = make_session_factory(url)
    with session_scope(factory) as session:
        job_id = jobs.create_job(session, folder, spec, "gradcam", overlays=overlays).id
    start = time.perf_counter()
    if overlapped:
        summary = run_local(factory, job_id, work / "out", analyzer=analyzer, batch_size=size)
    else:
        summary = serial_job(factory, job_id, analyzer, work / "out", size)
    elapsed = time.perf_counter() - start
    assert summary["done"] + summary["duplicate"] == summary["scans"], summary
    return elapsed


STAGES = ("walk", "load", "decode", "analyse", "write", "commit")
# Within decode and write (serial run): the functions timed, by (stage, step) -> (module, name).
STEPS = {("decode", "read"): ("worker.batch.analyse", "read_scan"),
         ("write", "thumbnail"): ("pipeline.explain.overlay", "render_thumbnail"),
         ("write", "jpeg"): ("pipeline.explain.overlay", "jpeg_bytes"),
         ("write", "heatmap"): ("pipeline.explain.overlay", "heatmap_bytes"),
         ("write", "peak"): ("pipeline.explain.overlay", "upsample"),  # the full-size map's
         ("write", "files"): ("pipeline.explain.overlay", "replace_file")}
stage_seconds: dict = {}  # serial run: [wall, process CPU] by stage and by (stage, step)
model_seconds = [0.0]  # overlapped run: wall time of the main thread in the model's pass


def serial_job(factory, job_id: int, analyzer, out: Path, size: int) -> dict:
    """Run the job's stages one after another (``process_batch``'s order), timing each."""
    from worker import batch, jobs
    from worker.db import session_scope

    timed("walk", lambda: [None for _ in jobs.enumerate_job(factory, job_id)])
    with session_scope(factory) as session:
        chunks = list(jobs.pending_scan_ids(session, job_id, size))
    with _steps_timed(analyzer):
        for ids in chunks:
            work = timed("load", batch.load, factory, job_id, ids, out)
            timed("decode", batch.decode, work, analyzer)
            timed("analyse", batch.analyse, work, analyzer)
            timed("write", batch.write, work)
            timed("commit", batch.commit, factory, work)
    jobs.finalize_job(factory, job_id)
    with session_scope(factory) as session:
        return jobs.job_summary(session, job_id)


def timed(stage, step, *args, **kwargs):
    """Run one stage with nothing else of this process running: its process CPU is its own."""
    clock, cpu = time.perf_counter(), time.process_time()
    try:
        return step(*args, **kwargs)
    finally:
        spent = stage_seconds.setdefault(stage, [0.0, 0.0])
        spent[0] += time.perf_counter() - clock
        spent[1] += time.process_time() - cpu


@contextlib.contextmanager
def _steps_timed(analyzer):
    """Time ``STEPS`` and the analyzer's ``prepare`` (the model input) while the block runs."""
    saved = [(sys.modules[module], name, getattr(sys.modules[module], name))
             for module, name in STEPS.values()]
    for key, (module, name) in STEPS.items():
        setattr(sys.modules[module], name, functools.partial(timed, key, getattr(sys.modules[module], name)))
    analyzer.prepare = functools.partial(timed, ("decode", "prepare"), type(analyzer).prepare, analyzer)
    try:
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)
        del analyzer.prepare


def _clocked_analyse(analyse):
    def run(*args, **kwargs):
        clock = time.perf_counter()
        try:
            return analyse(*args, **kwargs)
        finally:
            model_seconds[0] += time.perf_counter() - clock
    return run


def bench(name: str, folder: Path, tmp: Path, rounds: int, size: int, eager: bool) -> dict:
    """Return the median scans per second of each variant for one model, and where time went."""
    import keras

    from pipeline.explain.analysis import Analyzer
    from worker import batch as stages

    spec = save_model(tmp / name.replace(" ", "_"), name)
    analyzer = Analyzer(spec, "gradcam")
    batch = prepared(folder, analyzer)
    model = keras.models.load_model(spec.model_path)
    model.predict(batch[:size], batch_size=size, verbose=0)  # build predict's function
    analyzer.analyze(batch[:size])  # load and trace the fused pass
    variants = ("predict", "scan", "eager", "serial") if eager else ("predict", "scan", "serial")
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu = dict.fromkeys(times, 0.0)  # this process's CPU seconds: how much of the machine it got
    stage_seconds.clear()
    model_seconds[0] = 0.0
    analyse = stages.analyse
    for r in range(rounds):
        work = tmp / f"{name}-{r}"
        runs = {"predict": lambda: time_predict(model, batch, size),
                "scan": lambda: time_job(folder, spec, analyzer, work / "scan", size, True),
                "eager": lambda: time_job(folder, spec, analyzer, work / "eager", size, True, "eager"),
                "serial": lambda: time_job(folder, spec, analyzer, work / "serial", size, False)}
        for variant in variants:
            start = time.process_time()
            stages.analyse = _clocked_analyse(analyse) if variant == "scan" else analyse
            try:
                times[variant].append(runs[variant]())
            finally:
                stages.analyse = analyse
            cpu[variant] += time.process_time() - start
    per_scan = 1000 / (rounds * len(batch))
    rates = {k: len(batch) / statistics.median(v) for k, v in times.items()}
    # scan/predict of each round on its own: how far the ratio moves with the machine's load
    rates["rounds"] = [p / s for p, s in zip(times["predict"], times["scan"])]
    rates["stages"] = {k: (wall * per_scan, used * per_scan) for k, (wall, used) in stage_seconds.items()}
    # scan/predict with each scan run against the mean of the predict runs around it (the next
    # round's, or the same round's for the last): less moved by load that changes between runs
    around = [(p + q) / 2 for p, q in zip(times["predict"], times["predict"][1:] + times["predict"][-1:])]
    rates["paired"] = statistics.median(p / s for p, s in zip(around, times["scan"]))
    rates["cpu"] = {k: (v * per_scan, v / sum(times[k])) for k, v in cpu.items()}
    rates["model"] = (model_seconds[0] / sum(times["scan"]), model_seconds[0] * per_scan,
                      stage_seconds["analyse"][0] * per_scan, sum(times["predict"]) * per_scan)
    return rates


def report(model: str, rates: dict) -> None:
    eager = f" {rates['eager']:>8.1f} {rates['eager'] / rates['predict']:>12.2f}x" if "eager" in rates else ""
    print(f"{model:<18} {rates['predict']:>10.1f} {rates['scan']:>8.1f} {rates['serial']:>9.1f} "
          f"{rates['scan'] / rates['predict']:>12.2f}x {rates['scan'] / rates['serial']:>11.2f}x{eager}",
          flush=True)
    pad = " " * 18
    print(f"{pad} scan/predict in each round: {' '.join(f'{x:.2f}x' for x in rates['rounds'])}")
    print(f"{pad} scan/predict against the predict runs around each scan run, median: "
          f"{rates['paired']:.2f}x")
    stages = {k: v for k, v in rates["stages"].items() if k in STAGES}
    print(f"{pad} serial stages, ms per scan (wall / CPU): "
          + ", ".join(f"{k} {wall:.2f}/{used:.2f}" for k, (wall, used) in stages.items())
          + f"; total {sum(w for w, _ in stages.values()):.2f}/{sum(c for _, c in stages.values()):.2f}")
    for stage in ("decode", "write"):
        steps = {step: v for (within, step), v in
                 (item for item in rates["stages"].items() if isinstance(item[0], tuple)) if within == stage}
        rest = [stages[stage][i] - sum(v[i] for v in steps.values()) for i in (0, 1)]
        print(f"{pad}   {stage}: " + ", ".join(f"{k} {wall:.2f}/{used:.2f}" for k, (wall, used) in steps.items())
              + f", the rest {rest[0]:.2f}/{rest[1]:.2f}")
    busy, in_scan, in_serial, predict = rates["model"]
    print(f"{pad} scan: model busy {100 * busy:.0f} % of its wall time; the pass {in_scan:.2f} ms per "
          f"scan there, {in_serial:.2f} serial, predict {predict:.2f}")
    cpu = ", ".join(f"{k} {ms:.2f} ({cores:.2f} cores)" for k, (ms, cores) in rates["cpu"].items())
    print(f"{pad} CPU ms per scan (cores busy on average): {cpu}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", choices=("small", "xception", "default"), help="run one of the models")
    parser.add_argument("--eager", action="store_true", help="also time scan --overlays eager")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as name:
        tmp = Path(name)
        source = scan_folder(tmp / "scans", args.scans)
        print(f"{source}, batch {args.batch}, median of {args.rounds} rounds, {os.cpu_count()} CPUs")
        eager = f" {'eager/s':>8} {'eager/predict':>13}" if args.eager else ""
        print(f"{'model':<18} {'predict/s':>10} {'scan/s':>8} {'serial/s':>9} {'scan/predict':>13} "
              f"{'scan/serial':>12}{eager}")
        for model in MODELS:
            if not args.only or model.lower().startswith(args.only):
                report(model, bench(model, tmp / "scans", tmp, args.rounds, args.batch, args.eager))


if __name__ == "__main__":
    main()
