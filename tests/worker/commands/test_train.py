"""``tumorlens train`` from the command line."""

import json

import pytest
from click.testing import CliRunner

from pipeline.model.spec import load_spec
from tests.builders.cli import tumorlens as run
from worker.cli import main


@pytest.mark.slow
def test_train_from_the_command_line(prepared, tmp_path):
    result = run("train", prepared, "--out", tmp_path, "--input-size", 32, "--epochs", 1,
                 "--width", 4, "--batch-size", 8, "--no-select-method", "--augment", "flip,gamma")
    assert "val_loss" in result.output and "TEST" in result.output  # per-epoch progress, then TEST
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["config"]["augment"] == ["flip", "gamma"] and card["cam_method"] == "gradcam"
    assert load_spec(tmp_path).name == f"{prepared.name}-lens"


def test_train_refuses_an_unknown_augmentation(prepared, tmp_path):
    result = CliRunner().invoke(main, ["train", str(prepared), "--out", str(tmp_path),
                                       "--augment", "flip,swirl", "--input-size", "32"])
    assert result.exit_code != 0 and "swirl" in result.output
