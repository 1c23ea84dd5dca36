"""A NIfTI volume in a scanned folder: one record per axial slice inside the head, all done."""

from __future__ import annotations

import nibabel
import numpy as np

from tests.builders.cli import export, scan_json, small_model
from tests.builders.scans import write_good_scans
from tests.builders.volumes import head_volume


def test_a_volume_beside_plain_images_gives_a_record_per_slice(settings, tmp_path):
    folder = tmp_path / "scans"
    write_good_scans(folder, 2, size=(40, 40))
    nibabel.save(nibabel.Nifti1Image(head_volume(), np.diag([-1.0, -1.0, 1.0, 1.0])),
                 str(folder / "patient.nii.gz"))
    summary = scan_json(folder, "--model", small_model(tmp_path))
    assert (summary["scans"], summary["done"], summary["failed"]) == (3, 3, 0)
    slices = [row for row in export(summary["job"]) if row["path"] == "patient.nii.gz"]
    frames = [row["frame"] for row in slices]
    assert 10 < len(slices) < 30 and frames == sorted(frames)  # inferior to superior, head only
    assert {(row["width"], row["height"]) for row in slices} == {(40, 48)}  # R-L wide, A-P high
