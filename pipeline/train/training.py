"""Train a classifier on prepared TRAIN/VALIDATION/TEST folders and write model + spec + card.

Images are decoded once into uint8 arrays (cached as ``.npy``); augmentation and the model's
preprocessing run on batches inside tf.data, so an epoch costs only the network's own compute.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import datasets
from pipeline.train import architectures
from pipeline.model.preprocess import PREPROCESS
from pipeline.train.augment import build_augmenter
from pipeline.train.config import CLASS_NAMES, SCHEDULES, TrainConfig

def learning_rate(config: TrainConfig, steps_per_epoch: int) -> Any:
    """Return the optimizer's learning rate: a number, or a schedule over the whole run.

    ``plateau`` starts at ``config.learning_rate`` and leaves the cuts to ``ReduceLROnPlateau``
    (one of the callbacks). ``cosine`` warms up linearly from a tenth of it to it over the first
    epoch, then decays along a cosine to 1 % of it at the last epoch; the rate depends on the step
    alone, so a resumed run continues on the same curve.
    """
    if config.schedule not in SCHEDULES:
        raise ValueError(f'unknown learning-rate schedule "{config.schedule}"; '
                         f'choose one of {", ".join(SCHEDULES)}')
    if config.schedule == "plateau":
        return config.learning_rate
    import keras

    warmup = max(steps_per_epoch, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=max(config.epochs * steps_per_epoch - warmup, 1), alpha=0.01,
        warmup_target=config.learning_rate, warmup_steps=warmup)


@dataclass
class SplitData:
    """The decoded arrays of TRAIN and VALIDATION (all domains) ready for fitting."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    counts: dict
    train_m: np.ndarray | None = None  # outlines at input size, when guiding the CAM
    val_m: np.ndarray | None = None


def load_splits(folders: Sequence[str | Path], size: tuple[int, int], color_mode: str,
                cache_dir: Path, annotations=None) -> SplitData:
    """Decode TRAIN and VALIDATION of every folder once (and their outlines) and concatenate."""
    parts = {"TRAIN": [], "VALIDATION": []}
    counts = {}
    for folder in folders:
        for split, bucket in parts.items():
            examples = datasets.find_split(folder, split)
            images, labels = datasets.load_arrays(examples, size, color_mode, cache_dir)
            masks = (datasets.load_masks(examples, size, annotations, cache_dir)
                     if annotations is not None else np.zeros(len(labels), np.uint8))
            bucket.append((images, labels, masks))
            counts.setdefault(str(folder), {})[split] = _class_counts(labels)
    (tx, ty, tm), (vx, vy, vm) = ([np.concatenate(a) for a in zip(*parts[s])] for s in parts)
    if annotations is None:
        tm = vm = None
    return SplitData(tx, ty, vx, vy, counts, tm, vm)


def _class_counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(CLASS_NAMES)}


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Return weights that make each class count as much as the other in the loss."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {i: float(labels.size / (len(counts) * c)) for i, c in enumerate(counts) if c}


def make_datasets(data: SplitData, config: TrainConfig, preprocessing: str):
    """Return (train, validation) tf.data pipelines; only the training one is augmented."""
    import tensorflow as tf

    augmenter = build_augmenter(config.augment, seed=config.seed)
    prep = PREPROCESS[preprocessing]  # the very functions Analyzer.prepare applies

    def augment(x, y):
        return prep(augmenter(tf.cast(x, tf.float32), training=True)), y

    train = (tf.data.Dataset.from_tensor_slices((data.train_x, data.train_y))
             .shuffle(len(data.train_y), seed=config.seed, reshuffle_each_iteration=True)
             .batch(config.batch_size).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    val = (tf.data.Dataset.from_tensor_slices((data.val_x, data.val_y)).batch(config.batch_size)
           .map(lambda x, y: (prep(tf.cast(x, tf.float32)), y)).cache().prefetch(2))
    return train, val


def _trainee(model, data: SplitData, config: TrainConfig) -> tuple:
    """Return (model to fit, train, validation, fit options): plain, or CAM-guided by outlines.

    The guided model has two outputs, which Keras's ``class_weight`` does not serve; it is left
    out there (prepared splits are stratified, so the classes are near balance anyway).
    """
    import keras

    from pipeline.train import guidance

    preprocessing = architectures.preprocessing_for(config.arch)
    rate = learning_rate(config, -(-len(data.train_y) // config.batch_size))
    if not config.mask_weight:
        model.compile(optimizer=keras.optimizers.Adam(rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        train, val = make_datasets(data, config, preprocessing)
        return model, train, val, {"class_weight": class_weights(data.train_y)}
    trainee = guidance.guided_model(model)
    guidance.compile_guided(trainee, rate, config.mask_weight)
    train, val = guidance.guided_datasets(
        data.train_x, data.train_m, data.train_y, data.val_x, data.val_m, data.val_y,
        augment=config.augment, seed=config.seed, batch_size=config.batch_size,
        preprocess=PREPROCESS[preprocessing],
        map_size=tuple(model.get_layer("gap").input.shape[1:3]))
    return trainee, train, val, {}


def read_history(path: Path) -> list[dict]:
    """Return the per-epoch rows the CSV logger wrote, numbers as floats."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def _callbacks(out: Path, config: TrainConfig, history: list[dict]):
    import keras

    best = min((row["val_loss"] for row in history), default=None)
    plateau = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                 patience=max(config.patience // 3, 1), min_lr=1e-5)]
    return [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.ModelCheckpoint(str(out / "best.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        *(plateau if config.schedule == "plateau" else []),
    ]


def _start_fresh(out: Path) -> None:
    """Forget an earlier run's checkpoints and history in ``out``."""
    shutil.rmtree(out / "backup", ignore_errors=True)
    for name in ("history.csv", "best.weights.h5"):
        (out / name).unlink(missing_ok=True)


def warm_start(model, source: str | Path) -> None:
    """Give ``model`` the weights of a trained model of the same architecture, layer by layer.

    The lens and every GAP head have no weight that depends on the input size, so a model trained
    at one size can be fine-tuned at another.

    Args:
        model: the freshly built model about to be trained.
        source: a trained model's folder (or its model.json), as ``train`` writes it.

    Raises:
        SpecError, ModelError: ``source`` is not a readable model.
        ValueError: the two models differ in their layers or weight shapes (the message names the
            first difference and the options that decide it).
    """
    from pipeline.model.loading import load_model
    from pipeline.model.spec import load_spec

    spec = load_spec(source)
    theirs, ours = load_model(spec).weights, model.weights
    hint = "train with the --arch, --width and class count it was trained with"
    if len(theirs) != len(ours):
        raise ValueError(f"{spec.model_path} has {len(theirs)} weight arrays and the model being "
                         f"trained has {len(ours)}: not the same architecture; {hint}")
    for mine, given in zip(ours, theirs):
        if tuple(mine.shape) != tuple(given.shape):
            raise ValueError(f"{spec.model_path} does not fit the model being trained: its "
                             f"{given.path} is {tuple(given.shape)} where this model's {mine.path} is "
                             f"{tuple(mine.shape)}; {hint}")
    model.set_weights([np.asarray(w) for w in theirs])


def fit(data_dir: str | Path, out: str | Path, config: TrainConfig, resume: bool = False,
        cache_dir: str | Path | None = None, extra_callbacks: Sequence = (),
        annotations=None) -> tuple:
    """Train a classifier and save it as ``out/model.keras`` (best VALIDATION loss).

    Args:
        data_dir: a prepared folder with TRAIN/VALIDATION/TEST, each with yes/no.
        out: the output folder (checkpoints, history, model).
        config: the run's settings; ``extra_domains`` adds their TRAIN/VALIDATION.
        resume: continue from the last epoch checkpoint in ``out`` instead of starting over.
        cache_dir: where decoded arrays are cached; ``out/cache`` when None.
        extra_callbacks: more Keras callbacks (e.g. to stop early).
        annotations: an ``Annotations`` for the outlines that guide the CAM (``mask_weight``).

    Returns:
        ``(model, history, counts)``: the trained Keras model, the per-epoch history of every run
        into ``out`` and the class counts per folder and split.
    """
    import keras

    from pipeline.data.annotations import Annotations

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        _start_fresh(out)
    keras.utils.set_random_seed(config.seed)
    size = (config.input_size, config.input_size)
    color_mode = architectures.color_mode_for(config.arch)
    folders = [Path(data_dir), *map(Path, config.extra_domains)]
    data = load_splits(folders, size, color_mode, Path(cache_dir or out / "cache"),
                       (annotations or Annotations()) if config.mask_weight else None)
    kwargs = {"width": config.width, "channels": 1} if config.arch == "lens" else {}
    model = architectures.build_model(config.arch, size, config.weights, **kwargs)
    if config.init:
        warm_start(model, config.init)
    trainee, train, val, options = _trainee(model, data, config)
    callbacks = [*_callbacks(out, config, read_history(out / "history.csv")), *extra_callbacks]
    trainee.fit(train, validation_data=val, epochs=config.epochs, verbose=2, shuffle=False,
                callbacks=callbacks, **options)
    if (out / "best.weights.h5").is_file():
        trainee.load_weights(out / "best.weights.h5")
    model.save(out / "model.keras")
    return model, read_history(out / "history.csv"), data.counts


def train(data_dir: str | Path, out: str | Path, config: TrainConfig, resume: bool = False,
          annotations=None, cache_dir: str | Path | None = None, extra_callbacks: Sequence = (),
          select_method: bool = True) -> dict:
    """Train, write ``model.keras``, ``model.json`` and ``model_card.json``, return the card.

    Args:
        data_dir: a prepared folder with TRAIN/VALIDATION/TEST, each with yes/no.
        out: the output folder.
        config: the run's settings.
        resume: continue from the last epoch checkpoint in ``out``.
        annotations: an ``Annotations`` for tumor outlines (masks beside images are always found).
        cache_dir: where decoded arrays are cached; ``out/cache`` when None.
        extra_callbacks: more Keras callbacks.
        select_method: score every CAM method on VALIDATION to choose one (else gradcam).

    Returns:
        The model card.
    """
    from pipeline.train.card import describe

    _, history, counts = fit(data_dir, out, config, resume, cache_dir, extra_callbacks, annotations)
    return describe(data_dir, out, config, history, counts, annotations, select_method)
