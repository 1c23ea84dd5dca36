"""A trained model's in-distribution statistics: fitted on TRAIN, limited on VALIDATION, shipped.

``fit_model_distribution`` writes ``in_distribution.npz`` beside the model and names it in
model.json, so every scan of every later job gets an ``ood_score``
(``pipeline.explain.distribution``). ``train`` runs it after training; ``tumorlens
fit-distribution`` runs it on a model trained before it existed, on that model's own splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.evaluate.operating_point import analyse_split
from pipeline.explain.distribution import FILE_NAME, LIMIT_QUANTILE, fit_distribution
from pipeline.model.spec import ModelSpec, load_spec, write_spec


def fit_model_distribution(spec: ModelSpec, folders: Sequence[str | Path], analyzer=None,
                           validation: np.ndarray | None = None) -> tuple[ModelSpec, dict]:
    """Fit the model's training distribution on the folders' TRAIN and VALIDATION scans.

    Args:
        spec: the trained model.
        folders: the prepared folders it was trained on (TRAIN and VALIDATION are read).
        analyzer: an Analyzer of the model already built, to reuse; one is made otherwise.
        validation: the VALIDATION vectors when already computed (train has them).

    Returns:
        The spec as rewritten (with ``in_distribution``) and a record for the model card.
    """
    from pipeline.explain.analysis import Analyzer

    folders = [Path(f) for f in folders]
    analyzer = analyzer or Analyzer(spec)
    _, _, train = analyse_split(analyzer, folders, "TRAIN")
    if validation is None:
        validation = analyse_split(analyzer, folders, "VALIDATION")[2]
    distribution = fit_distribution(train, validation)
    (spec.folder / FILE_NAME).write_bytes(distribution.to_bytes())
    rewritten = load_spec(write_spec({**spec.to_json(), "in_distribution": FILE_NAME}, spec.folder))
    inside = float((distribution.scores(validation) <= 1).mean())
    return rewritten, {"file": FILE_NAME, "fitted_on": [str(f) for f in folders],
                       "train_scans": distribution.fitted_on, "validation_scans": len(validation),
                       "limit_quantile": LIMIT_QUANTILE, "limit": distribution.limit,
                       "validation_inside": inside}

