"""A job with the shipped default model records non-brain images as outside its experience.

The scans still get their probabilities and maps; the export flags them, and brain scans are not.
"""

from __future__ import annotations

import shutil

from PIL import Image

from tests.builders.cli import export, scan_json
from tests.builders.phantoms import PHANTOMS
from tests.conftest import PROJECT_ROOT


def test_the_default_model_flags_non_brain_images_and_keeps_their_probabilities(settings, tmp_path):
    folder = tmp_path / "scans"
    shutil.copytree(PROJECT_ROOT / "samples" / "yes", folder / "brain")
    (folder / "other").mkdir()
    for name, make in PHANTOMS.items():
        Image.fromarray(make()).save(folder / "other" / f"{name}.png")
    summary = scan_json(folder, "--model", PROJECT_ROOT / "models" / "default")
    assert summary["done"] == summary["scans"] == 4 + len(PHANTOMS)
    rows = {row["path"]: row for row in export(summary["job"])}
    for path, row in rows.items():
        assert row["out_of_distribution"] is path.startswith("other/"), (path, row["ood_score"])
        assert row["tumor_probability"] is not None and row["predicted_class"]  # shown, flagged
