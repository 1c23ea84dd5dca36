"""The model card and spec written beside a trained model: what it was trained on, how, and how
well it does on each domain's TEST split."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from pipeline.data import datasets
from pipeline.train import architectures
from pipeline.train.config import CLASS_NAMES, TrainConfig


def spec_dict(config: TrainConfig, name: str) -> dict:
    """Return the model.json content for a model trained with ``config``."""
    return {
        "format": 1,
        "name": name,
        "file": "model.keras",
        "input_size": [config.input_size, config.input_size],
        "color_mode": architectures.color_mode_for(config.arch),
        "preprocessing": architectures.preprocessing_for(config.arch),
        "class_names": CLASS_NAMES,
        "positive_classes": ["tumor"],
        "output": "probabilities",
        "target_layer": None,
    }


def config_dict(config: TrainConfig) -> dict:
    """Return the configuration as JSON-ready values."""
    values = dataclasses.asdict(config)
    values["augment"] = list(config.augment)
    values["extra_domains"] = [str(Path(p)) for p in config.extra_domains]
    return values


def write_json(path: Path, content: dict) -> None:
    """Write JSON with stable formatting so cards diff cleanly."""
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")


def record_in_card(folder: Path, key: str, record: dict) -> None:
    """Add ``record`` under ``key`` to the model card in ``folder``, when there is one."""
    path = Path(folder) / "model_card.json"
    if path.is_file():
        write_json(path, {**json.loads(path.read_text()), key: record})


def describe(data_dir: str | Path, out: str | Path, config: TrainConfig, history: list[dict],
             counts: dict, annotations=None, select_method: bool = True) -> dict:
    """Write ``model.json`` and ``model_card.json`` beside a trained ``out/model.keras``.

    The CAM method is chosen on VALIDATION (best mean pointing game on the annotated tumor scans
    of each domain); TEST of every domain is then evaluated once, with that method.

    Args:
        data_dir: the prepared folder the model was trained on.
        out: the folder holding ``model.keras``.
        config: the run's settings (``extra_domains`` are evaluated too).
        history: per-epoch rows, as ``read_history`` returns them.
        counts: class counts per folder and split, as ``fit`` returns them.
        annotations: an ``Annotations`` for tumor outlines.
        select_method: score every CAM method on VALIDATION to choose one (else gradcam).

    Returns:
        The model card.
    """
    import keras

    from pipeline.evaluate.operating_point import analyse_split, choose_threshold
    from pipeline.explain.analysis import METHODS, Analyzer
    from pipeline.data.annotations import Annotations
    from pipeline.evaluate.evaluation import choose_method, domain_reports
    from pipeline.model.spec import load_spec, write_spec
    from pipeline.train.familiarity import fit_model_distribution

    out, annotations = Path(out), annotations or Annotations()
    name = config.name or f"{Path(data_dir).name}-{config.arch}"
    write_spec(spec_dict(config, name), out)
    spec = load_spec(out)
    folders = [Path(data_dir), *map(Path, config.extra_domains)]
    method, validation = "gradcam", {}
    if select_method:
        reports = domain_reports(spec, folders, METHODS, annotations, "VALIDATION", True)
        method, validation = choose_method(reports)
    analyzer = Analyzer(spec)  # one model build for VALIDATION and TRAIN: neither needs the threshold
    labels, probability, neurons = analyse_split(analyzer, folders, "VALIDATION")
    point = None
    if config.target_sensitivity is not None:  # TEST is then measured at the chosen operating point
        point = {**choose_threshold(labels, probability, config.target_sensitivity),
                 "chosen_on": "VALIDATION"}
        spec = load_spec(write_spec({**spec_dict(config, name), "threshold": point["threshold"]}, out))
    # every scan of every later job then gets an ood_score
    spec, familiarity = fit_model_distribution(spec, folders, analyzer, neurons)
    card = {
        "name": name,
        "data": {"folder": str(data_dir), "manifest_sha256": datasets.manifest_digest(data_dir),
                 "extra_domains": {str(f): datasets.manifest_digest(f) for f in folders[1:]},
                 "counts": counts},
        "config": config_dict(config),
        **({"init": _init_record(config.init)} if config.init else {}),
        "software": {"keras": keras.__version__, "numpy": np.__version__},
        "history": history,
        "best_epoch": _best_epoch(history),
        "cam_method": method,
        "validation_localisation": validation,
        **({"operating_point": point} if point is not None else {}),
        "in_distribution": familiarity,
        "test": domain_reports(spec, folders, [method], annotations, "TEST"),
    }
    write_json(out / "model_card.json", card)
    return card


def _init_record(source: str) -> dict:
    """Name the model a fine-tuning run started from: its path and the digest jobs know it by."""
    from pipeline.model.spec import load_spec

    return {"model": str(Path(source)), "digest": load_spec(source).digest()}


def _best_epoch(history: list[dict]) -> int | None:
    if not history:
        return None
    return int(min(history, key=lambda row: row["val_loss"])["epoch"]) + 1
