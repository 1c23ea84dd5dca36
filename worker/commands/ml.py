"""``tumorlens train``, ``evaluate`` and ``split-cases``: make a model and measure it.

TensorFlow loads inside the commands, so ``tumorlens --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.train.architectures import ARCHITECTURES

METHOD_CHOICES = ("cam", "gradcam", "gradcampp", "scorecam", "layercam", "all")
DEFAULT_AUGMENT = "flip,rotation,zoom"


def _user_errors() -> tuple[type[Exception], ...]:
    """Return the exception types whose message is meant for the person at the terminal."""
    from pipeline.data.annotations import AnnotationError
    from pipeline.data.datasets import DataError
    from pipeline.model.loading import ModelError
    from pipeline.io.scans import ScanError
    from pipeline.model.spec import SpecError

    return AnnotationError, DataError, ModelError, ScanError, SpecError, FileNotFoundError


def _annotations(source: Path | None):
    from pipeline.data.annotations import Annotations

    return Annotations(source)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _classification_table(title: str, metrics: dict):
    from rich.table import Table

    table = Table(title=title)
    for column in ("scans", "accuracy", "sensitivity", "specificity", "ROC AUC", "ECE", "TN FP / FN TP"):
        table.add_column(column, justify="right")
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    table.add_row(str(metrics["n"]), _percent(metrics["accuracy"]), _percent(metrics["sensitivity"]),
                  _percent(metrics["specificity"]), _number(metrics["roc_auc"]),
                  _number(metrics["ece"]), f"{tn} {fp} / {fn} {tp}")
    return table


def _intervals_line(metrics: dict) -> str:
    """Return the bootstrap intervals of a classification report as one line ("" without them)."""
    intervals = metrics.get("intervals")
    if not intervals:
        return ""

    def span(key: str, scale: float, digits: int) -> str:
        bounds = intervals[key]
        return "-" if bounds is None else "–".join(f"{scale * b:.{digits}f}" for b in bounds)

    return (f"{intervals['level']:.0%} CI (bootstrap over {intervals['clusters']} groups of "
            f"near-duplicates or cases): accuracy {span('accuracy', 100, 1)} %, sensitivity "
            f"{span('sensitivity', 100, 1)} %, specificity {span('specificity', 100, 1)} %, "
            f"ROC AUC {span('roc_auc', 1, 3)}")


def _errors_line(metrics: dict, shown: int = 5) -> str:
    """Return where a classification report's errors fall, by group, as one line ("" without any)."""
    errors = metrics.get("errors")
    if not errors or not errors["scans"]:
        return ""
    largest = "; ".join(
        f"{g['group']}: {g['wrong']} of {g['scans']} {g['label']} ("
        + ", ".join(Path(path).name for path in g["paths"][:3]) + (", …" if g["wrong"] > 3 else "") + ")"
        for g in errors["by_group"][:shown])
    return (f"errors: {errors['scans']} of {metrics['n']} scans, in {errors['groups']} of "
            f"{errors['of_groups']} groups of near-duplicates or cases; most: {largest}")


def _sizes_line(metrics: dict) -> str:
    """Return the sensitivity by tumor size as one line ("" without outlined tumor scans)."""
    bins = [b for b in metrics.get("sensitivity_by_size", []) if b["n"]]
    if not bins:
        return ""

    def span(b: dict) -> str:
        low = f"{100 * b['from']:g}"
        return f"≥ {low} %" if b["to"] is None else f"{low}–{100 * b['to']:g} %"

    return ("sensitivity by tumor size (share of the image, on outlined tumor scans): "
            + "; ".join(f"{span(b)}: {_percent(b['sensitivity'])} of {b['n']}" for b in bins))


def _print_breakdown(console, metrics: dict) -> None:
    for line in (_errors_line(metrics), _sizes_line(metrics)):
        if line:
            console.print(line, markup=False)  # file names may hold brackets


def _localisation_table(report: dict):
    from rich.table import Table

    table = Table(title="Localisation on annotated tumor scans")
    for column in ("method", "scans", "pointing game", "energy inside", "IoU@0.5"):
        table.add_column(column, justify="right" if column != "method" else "left")
    faithful = report.get("faithfulness", {})
    if faithful:
        table.add_column("deletion AUC ↓", justify="right")
        table.add_column("insertion AUC ↑", justify="right")
    for method, scores in report["localisation"].items():
        if not scores.get("n"):
            continue
        row = [method.replace("_", " "), str(scores["n"]), _percent(scores["pointing"]),
               _percent(scores["energy"]), _number(scores["iou"])]
        if faithful:
            curves = faithful.get(method, {})
            row += [_number(curves.get("deletion")), _number(curves.get("insertion"))]
        table.add_row(*row)
    return table


def _print_report(report: dict) -> None:
    from rich.console import Console

    console = Console()
    console.print(_classification_table(f"{report['model']}: classification", report["classification"]))
    console.print(_intervals_line(report["classification"]))
    _print_breakdown(console, report["classification"])
    if any(s.get("n") for s in report["localisation"].values()):
        console.print(_localisation_table(report))
    else:
        console.print("No tumor outlines found: localisation not measured "
                      "(give --annotations, or keep <name>_mask.png beside the scans).")
    for skipped in report.get("skipped", []):
        console.print(f"not measured, unreadable: {skipped['path']}: {skipped['error']}")


@click.command("evaluate")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(exists=True, path_type=Path),
              help="VIA JSON file, or a folder of YOLO .txt / <name>_mask.png files.")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="gradcam", show_default=True,
              help="CAM method to score; 'all' compares every method in one table.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--limit", type=click.IntRange(1), help="Evaluate a seeded random subset of N scans.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--faithfulness", type=click.IntRange(0), default=0, show_default=True,
              help="Deletion/insertion curves on this many tumor scans per method.")
def evaluate_command(model: Path, data: Path, annotations: Path | None, method: str,
                     as_json: bool, limit: int | None, batch_size: int, faithfulness: int) -> None:
    """Measure MODEL on the labelled scans in DATA (its TEST split when it has one).

    DATA holds yes/no (or tumor/no_tumor, with case sub-folders) or TRAIN/VALIDATION/TEST.
    """
    from pipeline.explain.analysis import METHODS
    from pipeline.data.datasets import evaluation_examples
    from pipeline.evaluate.evaluation import evaluate, sample
    from pipeline.model.spec import load_spec

    methods = METHODS if method == "all" else (method,)
    try:
        examples = sample(evaluation_examples(data), limit)
        report = evaluate(load_spec(model), examples, methods, _annotations(annotations),
                          batch_size, faithfulness)
    except _user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    report["data"] = str(data)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)


@click.command("train")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for model.keras, model.json, model_card.json and checkpoints.")
@click.option("--arch", type=click.Choice(ARCHITECTURES), default="lens", show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="none, imagenet (needs the internet) or a local weights file for the backbone.")
@click.option("--input-size", type=click.IntRange(32), default=224, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--augment", default=DEFAULT_AUGMENT, show_default=True,
              help="Comma-separated: flip, rotation, zoom, contrast, gamma, noise, blur.")
@click.option("--width", type=click.IntRange(4), default=24, show_default=True,
              help="lens only: filters of the first stage.")
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), default="plateau",
              show_default=True,
              help="Learning rate: cut by 0.3 when VALIDATION loss stalls (plateau), or a one-epoch "
                   "warm-up then a cosine decay over --epochs (cosine).")
@click.option("--patience", type=click.IntRange(1), default=8, show_default=True,
              help="Epochs without a better VALIDATION loss before stopping.")
@click.option("--mask-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Weight of the loss that teaches the CAM the tumor outlines (0 = off).")
@click.option("--extra-domain", "extra_domains", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another prepared folder whose TRAIN/VALIDATION join training (repeatable).")
@click.option("--annotations", type=click.Path(exists=True, path_type=Path),
              help="Tumor outlines (VIA JSON or folder) for localisation metrics in the card.")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="Where decoded images are cached (default: OUT/cache).")
@click.option("--name", help="Model name in model.json (default: DATA-ARCH).")
@click.option("--resume", is_flag=True, help="Continue from the last epoch checkpoint in OUT.")
@click.option("--init", "init", type=click.Path(exists=True, path_type=Path),
              help="Start from a trained model's weights (its folder or model.json) of the same "
                   "architecture and width: fine-tuning, e.g. the default model on your own scans.")
@click.option("--select-method/--no-select-method", default=True, show_default=True,
              help="Choose the CAM method that localises best on VALIDATION.")
def train_command(data: Path, out: Path, arch: str, weights: str, input_size: int, epochs: int,
                  batch_size: int, seed: int, augment: str, width: int, learning_rate: float,
                  schedule: str, patience: int, mask_weight: float, extra_domains: tuple[Path, ...], annotations: Path | None,
                  cache: Path | None, name: str | None, resume: bool, init: Path | None,
                  select_method: bool) -> None:
    """Train a tumor / no-tumor classifier on DATA's TRAIN split (prepared by prepare-data).

    Stops early on VALIDATION loss (keeping the best epoch), then writes OUT/model.keras,
    OUT/model.json and OUT/model_card.json with the TEST metrics of every domain.
    """
    from pipeline.train.training import TrainConfig, train

    config = TrainConfig(arch=arch, weights=None if weights == "none" else weights,
                         input_size=input_size, epochs=epochs, batch_size=batch_size, seed=seed,
                         augment=[a.strip() for a in augment.split(",") if a.strip()],
                         learning_rate=learning_rate, schedule=schedule, patience=patience,
                         width=width,
                         mask_weight=mask_weight, extra_domains=[str(p) for p in extra_domains], name=name,
                         init=str(init) if init else None)
    try:
        card = train(data, out, config, resume=resume, annotations=_annotations(annotations),
                     cache_dir=cache, select_method=select_method)
    except (*_user_errors(), ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_card(card, out)


def _print_card(card: dict, out: Path) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"best epoch {card['best_epoch']}; CAM method {card['cam_method']}")
    for domain, report in card["test"].items():
        console.print(_classification_table(f"TEST {domain}", report["classification"]))
        console.print(_intervals_line(report["classification"]))
        _print_breakdown(console, report["classification"])
        if any(s.get("n") for s in report["localisation"].values()):
            console.print(_localisation_table(report))
    console.print(f"wrote {out / 'model.keras'}, {out / 'model.json'}, {out / 'model_card.json'}")


@click.command("split-cases")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", "split_text", default="60,20,20", show_default=True,
              help="TRAIN,VALIDATION,TEST shares of the cases (patients).")
@click.option("--seed", type=int, default=0, show_default=True)
def split_cases(src: Path, dest: Path, split_text: str, seed: int) -> None:
    """Split SRC/{tumor,no_tumor}/<case>/ by case (patient) into DEST/{TRAIN,VALIDATION,TEST}.

    Every slice of a patient lands in one split; masks travel with their slice; DEST gets
    symlinks and manifest.csv.
    """
    from pipeline.data.datasets import DataError, split_by_case

    try:
        fractions = [float(part) for part in split_text.split(",")]
        if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter("expected three non-negative numbers such as 60,20,20",
                                 param_hint="--split") from None
    try:
        counts = split_by_case(src, dest, fractions, seed)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("  ".join(f"{name} {count} slices" for name, count in counts.items()))


COMMANDS = [train_command, evaluate_command, split_cases]
