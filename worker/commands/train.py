"""``tumorlens train``: train a classifier on prepared splits and write model, spec and card.

TensorFlow loads inside the command, so ``tumorlens --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.train.architectures import ARCHITECTURES
from worker.commands.common import load_annotations, user_errors
from worker.commands.reports import print_domain

DEFAULT_AUGMENT = "flip,rotation,zoom"


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
@click.option("--target-sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Choose the operating point on VALIDATION: the highest threshold whose "
                   "sensitivity there reaches this (e.g. 0.97), written to model.json "
                   "(default: none, tumor from P >= 0.5).")
def train_command(data: Path, out: Path, arch: str, weights: str, input_size: int, epochs: int,
                  batch_size: int, seed: int, augment: str, width: int, learning_rate: float,
                  schedule: str, patience: int, mask_weight: float, extra_domains: tuple[Path, ...],
                  annotations: Path | None, cache: Path | None, name: str | None, resume: bool,
                  init: Path | None, select_method: bool, target_sensitivity: float | None) -> None:
    """Train a tumor / no-tumor classifier on DATA's TRAIN split (prepared by prepare-data).

    Stops early on VALIDATION loss (keeping the best epoch), then writes OUT/model.keras,
    OUT/model.json and OUT/model_card.json with the TEST metrics of every domain.
    """
    from pipeline.train.config import TrainConfig
    from pipeline.train.training import train

    config = TrainConfig(arch=arch, weights=None if weights == "none" else weights,
                         input_size=input_size, epochs=epochs, batch_size=batch_size, seed=seed,
                         augment=[a.strip() for a in augment.split(",") if a.strip()],
                         learning_rate=learning_rate, schedule=schedule, patience=patience,
                         width=width,
                         mask_weight=mask_weight, extra_domains=[str(p) for p in extra_domains], name=name,
                         init=str(init) if init else None, target_sensitivity=target_sensitivity)
    try:
        card = train(data, out, config, resume=resume, annotations=load_annotations(annotations),
                     cache_dir=cache, select_method=select_method)
    except (*user_errors(), ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    _print_card(card, out)


def _print_card(card: dict, out: Path) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"best epoch {card['best_epoch']}; CAM method {card['cam_method']}")
    if point := card.get("operating_point"):
        console.print(f"operating point: tumor when P >= {point['threshold']:.4g}, chosen on VALIDATION "
                      f"for sensitivity >= {point['target_sensitivity']:.0%} (there: sensitivity "
                      f"{point['sensitivity']:.1%}, specificity {point['specificity'] or 0:.1%})")
    for domain, report in card["test"].items():
        print_domain(console, f"TEST {domain}", report)
    console.print(f"wrote {out / 'model.keras'}, {out / 'model.json'}, {out / 'model_card.json'}")


COMMANDS = [train_command]
