"""Scans per second of the shipped default model against InceptionV3 at 224 px, side by side.

Both models run through the product's own path (``read_scan`` → ``Analyzer.prepare`` →
``Analyzer.analyze`` with Grad-CAM) on the same scans, in alternating rounds so that load from
other processes falls on both alike. InceptionV3 has random weights: its speed does not depend
on them.

    .venv/bin/python benchmarks/bench_default_model.py [--rounds 5] [--batch 16] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.explain.analysis import Analyzer  # noqa: E402
from pipeline.io.scans import read_scan  # noqa: E402
from pipeline.model.spec import load_spec, write_spec  # noqa: E402


def inception_spec(folder: Path):
    """Save an InceptionV3 classifier (GAP -> Dense head) at 224 px and return its spec."""
    from pipeline.train.architectures import build_model

    build_model("inceptionv3", (224, 224)).save(folder / "model.keras")
    write_spec({"name": "inceptionv3-224", "file": "model.keras", "input_size": [224, 224],
                "color_mode": "rgb", "preprocessing": "symmetric",
                "class_names": ["no_tumor", "tumor"], "positive_classes": ["tumor"],
                "output": "probabilities"}, folder)
    return load_spec(folder)


def sample_pixels(count: int) -> list[np.ndarray]:
    """Return ``count`` scans' pixels from samples/, repeated as needed."""
    paths = sorted(p for p in (ROOT / "samples").rglob("*.jpg"))
    pixels = [read_scan(p)[0].pixels for p in paths]
    return [pixels[i % len(pixels)] for i in range(count)]


def one_round(analyzer: Analyzer, scans: list[np.ndarray], batch: int) -> tuple[float, float]:
    """Return (seconds preparing, seconds analysing) for every scan, batch by batch."""
    prepare = analyse = 0.0
    for start in range(0, len(scans), batch):
        t0 = time.perf_counter()
        inputs = np.stack([analyzer.prepare(p) for p in scans[start:start + batch]])
        t1 = time.perf_counter()
        analyzer.analyze(inputs)
        prepare, analyse = prepare + t1 - t0, analyse + time.perf_counter() - t1
    return prepare, analyse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--scans", type=int, default=64)
    args = parser.parse_args()
    scans = sample_pixels(args.scans)
    with tempfile.TemporaryDirectory() as folder:
        analyzers = {"default": Analyzer(load_spec(args.model)),
                     "inceptionv3": Analyzer(inception_spec(Path(folder)))}
        for analyzer in analyzers.values():  # build and trace before timing
            one_round(analyzer, scans[:args.batch], args.batch)
        totals = {name: np.zeros(2) for name in analyzers}
        for _ in range(args.rounds):
            for name, analyzer in analyzers.items():
                totals[name] += one_round(analyzer, scans, args.batch)
    count = args.rounds * len(scans)
    print(f"{count} scans per model, batch {args.batch}, Grad-CAM, alternating rounds")
    for name, (prepare, analyse) in totals.items():
        print(f"{name:>12}: {count / analyse:8.1f} scans/s analysed, "
              f"{count / (prepare + analyse):8.1f} scans/s prepared+analysed")
    ratio = totals["inceptionv3"][1] / totals["default"][1]
    overall = totals["inceptionv3"].sum() / totals["default"].sum()
    print(f"default / inceptionv3 speed: {ratio:.1f}x analysed, {overall:.1f}x prepared+analysed")


if __name__ == "__main__":
    main()
