"""``tumorlens evaluate``: a model's classification and localisation metrics on a prepared split.

TensorFlow loads inside the command, so ``tumorlens --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from worker.commands.common import emit, load_annotations, user_errors
from worker.commands.reports import print_report
from worker.commands.shifts import run_shifts

METHOD_CHOICES = ("cam", "gradcam", "gradcampp", "scorecam", "layercam", "all")


@click.command("evaluate")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--annotations", type=click.Path(exists=True, path_type=Path),
              help="VIA JSON file, or a folder of YOLO .txt / <name>_mask.png files "
              "(and <volume>_seg.nii.gz mask volumes).")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="gradcam", show_default=True,
              help="CAM method to score; 'all' compares every method in one table.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--limit", type=click.IntRange(1), help="Evaluate a seeded random subset of N scans.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--faithfulness", type=click.IntRange(0), default=0, show_default=True,
              help="Deletion/insertion curves on this many tumor scans per method.")
@click.option("--shift", help="Controlled shifts of the scans, one table: 'all' or a comma list "
              "(resolution, padding, crop, off-centre, gamma, contrast, bias-field, inversion, "
              "noise, blur, jpeg).")
def evaluate_command(model: Path, data: Path, annotations: Path | None, method: str,
                     as_json: bool, limit: int | None, batch_size: int, faithfulness: int,
                     shift: str | None) -> None:
    """Measure MODEL on the labelled scans in DATA (its TEST split when it has one).

    DATA holds yes/no (or tumor/no_tumor, with case sub-folders) or TRAIN/VALIDATION/TEST.
    NIfTI volumes are measured slice by slice, labelled by their mask volume (BraTS-style
    X_seg.nii.gz beside them or in --annotations) or else by their yes/no folder.
    """
    from pipeline.explain.analysis import METHODS
    from pipeline.data.label_review import read_review
    from pipeline.evaluate.evaluation import evaluate, evaluation_set, sample
    from pipeline.model.spec import load_spec

    if shift:
        if faithfulness:
            raise click.UsageError("--faithfulness is not measured with --shift")
        return run_shifts(model, data, annotations, shift, method, limit, batch_size, as_json)
    methods = METHODS if method == "all" else (method,)
    try:
        outlines = load_annotations(annotations)
        examples = sample(evaluation_set(data, outlines), limit)
        report = evaluate(load_spec(model), examples, methods, outlines, batch_size, faithfulness,
                          review=read_review(data))
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from None
    emit(report, data, as_json, print_report)


COMMANDS = [evaluate_command]
