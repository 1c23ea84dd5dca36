"""NIfTI volumes: axial slices found from the affine, shown as radiologists view them."""

from __future__ import annotations

import gzip

import nibabel
import numpy as np
import pytest

from pipeline.io.nifti import looks_like_nifti
from pipeline.io.scans import ScanError, is_scan_candidate, read_scan
from tests.builders.volumes import SHAPE, head_volume

def save(path, volume: np.ndarray, affine: np.ndarray, version=nibabel.Nifti1Image) -> str:
    nibabel.save(version(volume, affine), str(path))
    return str(path)


def stored_as(affine: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the array and affine that store the RAS ``volume`` under ``affine``'s axis order."""
    ornt = nibabel.orientations.io_orientation(affine)
    data = nibabel.orientations.apply_orientation(
        volume, nibabel.orientations.ornt_transform(nibabel.orientations.axcodes2ornt("RAS"), ornt))
    return data, affine


def brightest(scan) -> tuple[int, int]:
    """Return the (row, column) of a slice's brightest pixel: the head's right anterior edge."""
    row, col = np.unravel_index(int(np.argmax(scan.pixels)), scan.pixels.shape)
    return int(row), int(col)


AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps (DICOM-like, flipped)": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "slices first (axial along the array's first axis)": np.array(
        [[0, 1.0, 0, 0], [0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]]),
    "oblique (10 degrees about S)": np.array(
        [[np.cos(0.17), -np.sin(0.17), 0, 0], [np.sin(0.17), np.cos(0.17), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", AFFINES)
def test_slices_are_axial_inferior_to_superior_whatever_the_stored_orientation(tmp_path, name):
    data, affine = stored_as(AFFINES[name], head_volume())
    scans = read_scan(save(tmp_path / "head.nii.gz", data, affine))
    frames = [s.frame for s in scans]
    assert frames == sorted(frames) and 0 < len(scans) < SHAPE[2]  # the empty end slices left out
    assert all(s.pixels.shape == (SHAPE[1], SHAPE[0]) and s.pixels.dtype == np.uint8 for s in scans)
    means = [s.pixels[s.pixels > 0].mean() for s in scans]
    assert means == sorted(means)  # brighter upwards: the frames run inferior to superior
    for scan in scans[2:-2]:
        row, col = brightest(scan)
        assert row < SHAPE[1] // 2  # anterior is up
        assert col < SHAPE[0] // 2  # the patient's right is on the image's left
    assert scans[0].info["format"] == "NIfTI" and scans[0].info["slice"] == str(scans[0].frame)


def test_plain_nii_gzipped_and_nifti2_read_alike(tmp_path):
    volume = head_volume()
    plain = read_scan(save(tmp_path / "a.nii", volume, np.eye(4)))
    zipped = read_scan(save(tmp_path / "b.nii.gz", volume, np.eye(4)))
    second = read_scan(save(tmp_path / "c.nii", volume, np.eye(4), nibabel.Nifti2Image))
    for other in (zipped, second):
        assert [s.frame for s in other] == [s.frame for s in plain]
        assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(plain, other))


def test_a_4d_volume_gives_its_first_volume(tmp_path):
    volume = head_volume()
    series = np.stack([volume, np.zeros_like(volume)], axis=-1)
    first = read_scan(save(tmp_path / "t.nii.gz", series, np.eye(4)))
    alone = read_scan(save(tmp_path / "v.nii.gz", volume, np.eye(4)))
    assert [s.frame for s in first] == [s.frame for s in alone] and first


def test_names_contents_and_damage(tmp_path):
    path = save(tmp_path / "head.nii.gz", head_volume(), np.eye(4))
    assert is_scan_candidate(path) and is_scan_candidate(tmp_path / "x.NII")
    assert not is_scan_candidate(tmp_path / "notes.txt.gz")
    data = open(path, "rb").read()
    assert looks_like_nifti(data) and looks_like_nifti(gzip.decompress(data))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(gzip.decompress(data)[:2000])
    with pytest.raises(ScanError, match="damaged"):
        read_scan(cut)
