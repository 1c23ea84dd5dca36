"""End-to-end ``scan --local`` against bare ``model.predict``, side by side on the same scans.

For each model, in alternating rounds (so load from other processes falls on both alike):

- predict: ``model.predict`` on the scans already decoded and preprocessed (the ceiling);
- scan: the in-process job on the same folder with the same model: walk and hash, decode,
  the fused pass (probabilities + Grad-CAM + neuron vectors), overlay, thumbnail and heatmap
  files, rows in SQLite, one transaction per batch, with decoding and writing overlapped;
- serial: the same job's stages one batch after another, as ``process_batch`` runs them (what
  the overlap buys), each stage timed: where a scan's time goes.

Each variant's CPU time per scan is printed too, with the cores it kept busy on average: on a
shared machine a variant that got less than the 2 cores shows it there.

Models: a 4-layer CNN at 224 px and an Xception-based classifier at 150 px (random weights: speed
does not depend on them), and the shipped default model (``models/default``), as ``scan`` runs it.
The model is loaded and traced before timing in every variant. Scans: ~200 Br35H JPEGs from
``../shared/data`` when present, else synthetic ones of similar sizes.

    .venv/bin/python benchmarks/bench_scan.py [--scans 200] [--rounds 2] [--batch 16] [--only small|xception|default]
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "br35h"


def scan_folder(folder: Path, count: int) -> str:
    """Fill ``folder`` with ``count`` scans; return where they came from."""
    folder.mkdir(parents=True)
    if (SHARED / "yes").is_dir():
        sources = sorted((SHARED / "yes").iterdir())[:count // 2]
        sources += sorted((SHARED / "no").iterdir())[:count - len(sources)]
        for source in sources:
            shutil.copyfile(source, folder / source.name)
        return f"{len(sources)} Br35H JPEGs"
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        side = int(rng.integers(200, 700))
        Image.fromarray(rng.integers(0, 255, (side, side), np.uint8)).save(folder / f"s{i}.jpg")
    return f"{count} synthetic JPEGs (../shared/data is absent)"


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


def time_job(folder: Path, spec, analyzer, work: Path, size: int, overlapped: bool) -> float:
    """Run one fresh job on ``folder``; return its wall time from walk to finalisation."""
    from worker import jobs
    from worker.db import make_session_factory, session_scope, upgrade
    from worker.local import run_local

    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'store.db'}"
    upgrade(url)
    factory = make_session_factory(url)
    with session_scope(factory) as session:
        job_id = jobs.create_job(session, folder, spec, "gradcam").id
    start = time.perf_counter()
    if overlapped:
        summary = run_local(factory, job_id, work / "out", analyzer=analyzer, batch_size=size)
    else:
        summary = serial_job(factory, job_id, analyzer, work / "out", size)
    elapsed = time.perf_counter() - start
    assert summary["done"] + summary["duplicate"] == summary["scans"], summary
    return elapsed


STAGES = ("walk", "load", "decode", "analyse", "write", "commit")
stage_seconds = dict.fromkeys(STAGES, 0.0)


def serial_job(factory, job_id: int, analyzer, out: Path, size: int) -> dict:
    """Run the job's stages one after another (``process_batch``'s order), timing each."""
    from worker import batch, jobs
    from worker.db import session_scope

    clock = time.perf_counter()
    for _ in jobs.enumerate_job(factory, job_id):
        pass
    stage_seconds["walk"] += time.perf_counter() - clock
    with session_scope(factory) as session:
        chunks = list(jobs.pending_scan_ids(session, job_id, size))
    for ids in chunks:
        work = timed("load", batch.load, factory, job_id, ids, out)
        timed("decode", batch.decode, work, analyzer)
        timed("analyse", batch.analyse, work, analyzer)
        timed("write", batch.write, work)
        timed("commit", batch.commit, factory, work)
    jobs.finalize_job(factory, job_id)
    with session_scope(factory) as session:
        return jobs.job_summary(session, job_id)


def timed(stage: str, step, *args):
    clock = time.perf_counter()
    result = step(*args)
    stage_seconds[stage] += time.perf_counter() - clock
    return result


def bench(name: str, folder: Path, tmp: Path, rounds: int, size: int) -> dict[str, float]:
    """Return the median scans per second of each variant for one model."""
    import keras

    from pipeline.explain.analysis import Analyzer

    spec = save_model(tmp / name.replace(" ", "_"), name)
    analyzer = Analyzer(spec, "gradcam")
    batch = prepared(folder, analyzer)
    model = keras.models.load_model(spec.model_path)
    model.predict(batch[:size], batch_size=size, verbose=0)  # build predict's function
    analyzer.analyze(batch[:size])  # load and trace the fused pass
    times: dict[str, list[float]] = {"predict": [], "scan": [], "serial": []}
    cpu = dict.fromkeys(times, 0.0)  # this process's CPU seconds: how much of the machine it got
    stage_seconds.update(dict.fromkeys(STAGES, 0.0))
    for r in range(rounds):
        runs = {"predict": lambda: time_predict(model, batch, size),
                "scan": lambda: time_job(folder, spec, analyzer, tmp / f"{name}-{r}-o", size, True),
                "serial": lambda: time_job(folder, spec, analyzer, tmp / f"{name}-{r}-s", size, False)}
        for variant, run in runs.items():
            start = time.process_time()
            times[variant].append(run())
            cpu[variant] += time.process_time() - start
    rates = {k: len(batch) / statistics.median(v) for k, v in times.items()}
    # scan/predict of each round on its own: how far the ratio moves with the machine's load
    rates["rounds"] = [p / s for p, s in zip(times["predict"], times["scan"])]
    rates["stages"] = {k: 1000 * v / (rounds * len(batch)) for k, v in stage_seconds.items()}
    rates["cpu"] = {k: (1000 * v / (rounds * len(batch)), v / sum(times[k])) for k, v in cpu.items()}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", choices=("small", "xception", "default"), help="run one of the models")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as name:
        tmp = Path(name)
        source = scan_folder(tmp / "scans", args.scans)
        print(f"{source}, batch {args.batch}, median of {args.rounds} rounds, {os.cpu_count()} CPUs")
        print(f"{'model':<18} {'predict/s':>10} {'scan/s':>8} {'serial/s':>9} {'scan/predict':>13} "
              f"{'scan/serial':>12}")
        for model in MODELS:
            if args.only and not model.lower().startswith(args.only):
                continue
            rates = bench(model, tmp / "scans", tmp, args.rounds, args.batch)
            print(f"{model:<18} {rates['predict']:>10.1f} {rates['scan']:>8.1f} {rates['serial']:>9.1f} "
                  f"{rates['scan'] / rates['predict']:>12.2f}x {rates['scan'] / rates['serial']:>11.2f}x",
                  flush=True)
            rounds = " ".join(f"{ratio:.2f}x" for ratio in rates["rounds"])
            print(f"{'':<18} scan/predict in each round: {rounds}", flush=True)
            stages = ", ".join(f"{k} {v:.1f}" for k, v in rates["stages"].items())
            print(f"{'':<18} serial stages, ms per scan: {stages}", flush=True)
            cpu = ", ".join(f"{k} {ms:.1f} ({cores:.2f} cores)" for k, (ms, cores) in rates["cpu"].items())
            print(f"{'':<18} CPU ms per scan (cores busy on average): {cpu}", flush=True)


if __name__ == "__main__":
    main()
