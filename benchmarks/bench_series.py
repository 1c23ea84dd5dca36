"""Series-level calls of the shipped default model on LGG test patients, by aggregation.

Which series shows a tumor, and on which slices: every FLAIR slice of each LGG TEST patient
(``lgg_3m/<case>/<slice>_flair.jpg`` in slice order) goes through the product's path
(``read_scan`` -> ``Analyzer.prepare`` -> ``Analyzer.analyze``, batched), and
``pipeline.evaluate.series`` turns each patient's slice probabilities into one series call.

The TEST patients are those of the project's patient-level split, made by the project's own code
(``split_by_case`` on ``lgg_flair`` with 60,20,20 and seed 0, as ``tumorlens split-cases`` and
``scripts/train_default.sh`` do) in a temporary folder; its manifest is checked against the one
the default model's card records, so no TEST patient was seen in training or validation.

Every LGG patient has a tumor, so there is no truly tumor-free series. As a PROXY, each patient
also gets a "clean series": their slices with an empty mask lying at least ``--margin`` slices
from any tumor slice, in slice order. It may join the slices above and below the tumor across a
gap; it is shorter than the full series (which flatters specificity under max and noisy-OR); and
skull-base and vertex slices make up more of it than of a whole series. Sensitivity is over the
full series (tumor series called tumor), specificity over the clean series (called clean).

Everything is printed twice: with every slice as the model scores it, and with the slices the
model itself flags as outside its experience (``ood_score`` > 1, from the same pass, when the
model ships in-distribution statistics) counted as no evidence (probability 0): the skull-base
and vertex slices of a real series, which the LGG training slices left out, are where most false
tumor slices of the clean series lie.

The same is measured on the VALIDATION patients, where the aggregation is chosen among the rules
that one sure slice alone cannot fire (a condition set before any data; it rules out max, the
noisy-ORs and top-k means of k < 3): sensitivity first, then specificity, then AUC. TEST then gives the held-out figures of that choice. With 22
patients a split, one patient is 4.5 points. Every LGG patient's tumor spans at least 3 slices,
so these data cannot show what a rule needing 3 slices does to a lesion seen on 1 or 2.

    .venv/bin/python benchmarks/bench_series.py [--margin 3] [--batch 32] [--thresholds 0.7 0.9]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.data.datasets import manifest_digest, split_by_case  # noqa: E402
from pipeline.evaluate import series  # noqa: E402
from pipeline.model.spec import load_spec  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
VOLUMES, SLICES = DATA / "lgg_3m", DATA / "lgg_flair"
CARD_KEY = ".tumorlens/data/lgg-split"  # where train_default.sh keeps the split the model used
CONFIGS = (("max", 1), ("top-k-mean", 2), ("top-k-mean", 3), ("top-k-mean", 5), ("noisy-or", 1),
           ("noisy-or-top-k", 2), ("noisy-or-top-k", 3), ("consecutive", 2), ("consecutive", 3))
EVERY, OUTSIDE = "every slice as scored", "slices flagged outside the model's experience as no evidence"


@dataclass(frozen=True)
class Patient:
    """One test patient's FLAIR series: slice probabilities and which slices hold tumor."""

    case: str
    probability: np.ndarray  # (N,) P(tumor) of each slice, in slice order
    tumor: np.ndarray  # (N,) bool: the expert mask is not empty
    clean: np.ndarray  # indices of the proxy clean series
    ood: np.ndarray | None  # (N,) the model's out-of-distribution score (> 1: outside), or None

    @property
    def tumor_range(self) -> tuple[int, int]:
        where = np.flatnonzero(self.tumor)
        return int(where[0]), int(where[-1])


def split_cases(model: Path, split: str = "TEST") -> tuple[list[str], bool]:
    """Return one split's cases of the project's patient split and whether the model card agrees."""
    with tempfile.TemporaryDirectory() as folder:
        split_by_case(SLICES, folder, (60, 20, 20), seed=0)
        digest = manifest_digest(folder)
        with open(Path(folder) / "manifest.csv", newline="") as handle:
            cases = sorted({row["case"] for row in csv.DictReader(handle) if row["split"] == split})
    card = model / "model_card.json"
    recorded = json.loads(card.read_text())["data"].get("extra_domains", {}) if card.is_file() else {}
    return cases, recorded.get(CARD_KEY) == digest


def clean_indices(tumor: np.ndarray, margin: int) -> np.ndarray:
    """Return the slices without tumor lying at least ``margin`` slices from every tumor slice."""
    where = np.flatnonzero(tumor)
    if not where.size:
        return np.arange(tumor.size)
    distance = np.abs(np.arange(tumor.size)[:, None] - where[None, :]).min(axis=1)
    return np.flatnonzero(distance >= margin)


def flair_slices(case: str) -> tuple[list[Path], np.ndarray]:
    """Return a case's FLAIR files in slice order and whether each slice's mask holds tumor."""
    paths = sorted((VOLUMES / case).glob("*_flair.jpg"), key=lambda p: int(p.name.split("_")[0]))
    tumor = []
    for path in paths:
        with Image.open(path.with_name(path.name.replace("_flair.jpg", "_mask.png"))) as mask:
            tumor.append(bool((np.asarray(mask.convert("L")) > 127).any()))
    return paths, np.array(tumor)


def predict(analyzer, paths: list[Path], batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Return P(tumor) and the OOD score of every file, read and prepared as a job does."""
    from rich.console import Console
    from rich.progress import Progress

    from pipeline.io.scans import read_scan

    found, ood = [], []
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("FLAIR slices", total=len(paths))
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            result = analyzer.analyze(np.stack([analyzer.prepare(read_scan(p)[0].pixels) for p in chunk]))
            found.append(np.asarray(result.tumor_probability, np.float64))
            ood.append(None if result.ood_score is None else np.asarray(result.ood_score, np.float64))
            bar.update(task, advance=len(chunk))
    return np.concatenate(found), None if ood[0] is None else np.concatenate(ood)


def load_patients(analyzer, cases: list[str], margin: int, batch: int) -> list[Patient]:
    """Run the model over every test patient's series, all slices batched together."""
    volumes = [flair_slices(case) for case in cases]
    probability, ood = predict(analyzer, [p for paths, _ in volumes for p in paths], batch)
    bounds = np.cumsum([0] + [len(paths) for paths, _ in volumes])
    return [Patient(case, probability[a:b], tumor, clean_indices(tumor, margin),
                    None if ood is None else ood[a:b])
            for case, (_, tumor), a, b in zip(cases, volumes, bounds[:-1], bounds[1:])]


def without_outside(patients: list[Patient]) -> list[Patient]:
    """Return the patients with every slice the model flags as outside its experience at P = 0."""
    return [replace(p, probability=np.where(p.ood > 1, 0.0, p.probability)) for p in patients]


def outside_line(patients: list[Patient], threshold: float) -> str:
    """Return how many tumor, clean and falsely called clean slices the OOD score flags."""
    tumor = np.concatenate([p.ood[p.tumor] for p in patients])
    clean = np.concatenate([p.ood[p.clean] for p in patients])
    false = np.concatenate([p.ood[p.clean][p.probability[p.clean] >= threshold] for p in patients])
    return (f"slices flagged outside the model's experience (ood_score > 1): tumor slices "
            f"{(tumor > 1).sum()}/{tumor.size}, clean-series slices {(clean > 1).sum()}/{clean.size}, "
            f"clean-series slices called tumor (P >= {threshold:.2f}) {(false > 1).sum()}/{false.size}")


def auc(positive: list[float], negative: list[float]) -> float:
    """Return the probability that a tumor series outscores a clean one (ties count half)."""
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def score(patients: list[Patient], name: str, k: int, thresholds: list[float]) -> dict:
    """Return AUC and, per threshold, tumor series called tumor and clean series called clean."""
    full = [series.aggregate(p.probability, name, k) for p in patients]
    clean = [series.aggregate(p.probability[p.clean], name, k) for p in patients if p.clean.size]
    return {"auc": auc(full, clean), "n_tumor": len(full), "n_clean": len(clean),
            **{t: (sum(f >= t for f in full), sum(c < t for c in clean)) for t in thresholds}}


def overlaps(run: tuple[int, int] | None, other: tuple[int, int]) -> bool:
    return run is not None and run[0] <= other[1] and other[0] <= run[1]


def range_line(patients: list[Patient], threshold: float) -> str:
    """Return how the called tumor runs of the full series sit against the true tumor range."""
    results = [series.summarise_series(p.probability, threshold) for p in patients]
    longest = sum(overlaps(r.longest_run, p.tumor_range) for r, p in zip(results, patients))
    some = sum(any(overlaps(run, p.tumor_range) for run in r.runs) for r, p in zip(results, patients))
    inside = [p.tumor[r.longest_run[0]:r.longest_run[1] + 1].mean()
              for r, p in zip(results, patients) if r.longest_run]
    covered = [p.tumor[r.longest_run[0]:r.longest_run[1] + 1].sum() / p.tumor.sum()
               for r, p in zip(results, patients) if r.longest_run]
    several = sum(len(r.runs) > 1 for r in results)
    n = len(patients)
    return (f"  threshold {threshold:.2f}: longest called run overlaps the true tumor range "
            f"{longest}/{n}; some run overlaps it {some}/{n}; longest run's slices that hold "
            f"tumor {_mean(inside)}; tumor slices inside the longest run {_mean(covered)}; "
            f"series with more than one run {several}/{n}")


def _mean(values: list[float]) -> str:
    return f"{100 * np.mean(values):.0f} %" if values else "n/a"


def strongest_line(patients: list[Patient]) -> str:
    """Return how often the strongest-evidence slice of a full series is (next to) a tumor slice."""
    hits = near = 0
    for patient in patients:
        best = series.summarise_series(patient.probability).strongest_slice
        hits += bool(patient.tumor[best])
        near += bool(patient.tumor[max(0, best - 1):best + 2].any())
    n = len(patients)
    return (f"strongest-evidence slice (argmax, the same for every aggregation) is a tumor slice "
            f"{hits}/{n} ({100 * hits / n:.0f} %), within one slice of one {near}/{n}")


def table(rows: dict, thresholds: list[float]) -> list[str]:
    """Return the aggregation table: AUC, then sensitivity and specificity per threshold."""
    head = f"{'aggregation':<15}{'k':>3}{'AUC':>7}" + "".join(
        f"  {'sens@' + format(t, '.2f'):>10} {'spec@' + format(t, '.2f'):>10}" for t in thresholds)
    lines = [head]
    for (name, k), row in rows.items():
        cells = "".join(f"  {_rate(row[t][0], row['n_tumor']):>10} {_rate(row[t][1], row['n_clean']):>10}"
                        for t in thresholds)
        shown_k = str(k) if name in series.USES_K else "-"
        lines.append(f"{name:<15}{shown_k:>3}{row['auc']:>7.3f}{cells}")
    return lines


def _rate(hits: int, total: int) -> str:
    return f"{hits}/{total} {100 * hits / total:3.0f}%" if total else "n/a"


def choose(rows: dict, threshold: float) -> tuple[str, int]:
    """Pick among the rules that one sure slice alone cannot fire (set before any data: a call
    needs evidence on two slices or more) the most tumor series found, then the most clean ones
    cleared, then AUC, then the simplest."""
    order = list(rows)
    lone = [1.0] + [0.0] * 20  # one certain slice in a series of clean ones

    def merit(key):
        row = rows[key]
        return (series.aggregate(lone, *key) < threshold, row[threshold][0] / row["n_tumor"],
                row[threshold][1] / max(row["n_clean"], 1), row["auc"], -order.index(key))

    return max(rows, key=merit)


def report(patients: list[Patient], thresholds: list[float]) -> dict:
    """Print the aggregation table, strongest slice and called ranges; return the table's rows."""
    rows = {(name, k): score(patients, name, k, thresholds) for name, k in CONFIGS}
    print("\n".join(table(rows, thresholds)))
    print(strongest_line(patients))
    print("called tumor range (runs of slices at or above the threshold, full series):")
    for threshold in thresholds:
        print(range_line(patients, threshold))
    return rows


def _named(key: tuple[str, int]) -> str:
    name, k = key
    return name + (f" (k={k})" if name in series.USES_K else "")


def _figures(row: dict, threshold: float) -> str:
    return (f"{row[threshold][0]}/{row['n_tumor']} tumor series called tumor, "
            f"{row[threshold][1]}/{row['n_clean']} clean series called clean, AUC {row['auc']:.3f}")


def measure(split: str, analyzer, args, thresholds: list[float]) -> dict[str, dict]:
    """Print one split's header and tables, every slice and OOD slices as no evidence."""
    spec = analyzer.spec
    cases, agrees = split_cases(args.model, split)
    patients = load_patients(analyzer, cases, args.margin, args.batch)
    clean = [p.clean.size for p in patients if p.clean.size]
    print(f"\n######## {split}: {len(cases)} LGG patients (split-cases 60,20,20 seed 0; "
          f"{'the same' if agrees else 'NOT the same'} split as the model card records), "
          f"{sum(p.probability.size for p in patients)} FLAIR slices, "
          f"{sum(p.tumor.sum() for p in patients)} with tumor")
    print(f"clean series = PROXY for a tumor-free series: a patient's empty-mask slices at least "
          f"{args.margin} slices from any tumor slice; {len(clean)}/{len(patients)} patients have one, "
          f"median {np.median(clean):.0f} slices (full series median "
          f"{np.median([p.probability.size for p in patients]):.0f})")
    print(f"\n== {split}, {EVERY} ==")
    found = {EVERY: report(patients, thresholds)}
    if patients[0].ood is None:
        print(f"\n{spec.name} ships no in-distribution statistics: no OOD variant")
        return found
    print(f"\n== {split}, {OUTSIDE} (P = 0) ==")
    print(outside_line(patients, spec.decision_threshold))
    found[OUTSIDE] = report(without_outside(patients), thresholds)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--margin", type=int, default=3, help="clean slices' distance from tumor")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.7, 0.9],
                        help="series thresholds besides the model's own")
    args = parser.parse_args()
    if not (VOLUMES.is_dir() and SLICES.is_dir()):
        print(f"{VOLUMES} or {SLICES} not found: nothing to measure")
        return 0
    from pipeline.explain.analysis import Analyzer

    started = time.perf_counter()
    spec = load_spec(args.model)
    threshold = spec.decision_threshold
    thresholds = sorted({threshold, *args.thresholds})
    analyzer = Analyzer(spec, "gradcam")
    print(f"model {spec.name}, its threshold {threshold:.2f}; sensitivity = tumor series called "
          f"tumor, specificity = clean series (proxy) called clean, per patient")
    found = {split: measure(split, analyzer, args, thresholds) for split in ("VALIDATION", "TEST")}
    variant = OUTSIDE if OUTSIDE in found["VALIDATION"] else EVERY
    key = choose(found["VALIDATION"][variant], threshold)
    best_plain = max(row[threshold][1] for row in found["TEST"][EVERY].values())
    print(f"\nchoice, made on VALIDATION at the model's threshold {threshold:.2f} (among rules one "
          f"sure slice alone cannot fire: the most tumor series found, then the most clean series cleared, "
          f"then AUC, then the simpler rule): "
          f"{_named(key)} with {variant}."
          f"\n  VALIDATION: {_figures(found['VALIDATION'][variant][key], threshold)}"
          f"\n  TEST (held out): {_figures(found['TEST'][variant][key], threshold)}"
          f"\n  with {EVERY}, no aggregation clears more than {best_plain} TEST clean series at "
          f"{threshold:.2f}: leaving out what the model flags as unfamiliar matters more than the "
          f"aggregation")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
