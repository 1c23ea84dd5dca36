"""The scan page and its images: real artifacts written by pipeline.explain.overlay, originals from the root."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.explain.overlay import write_outputs
from tests.web import seed
from worker.models import Result, ScanStatus


def gradient_scan(width: int = 80, height: int = 60) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)
    return np.repeat(np.broadcast_to(x, (height, width))[..., None], 3, axis=2).astype(np.uint8)


def hot_spot(size: int = 12) -> np.ndarray:
    cam = np.zeros((size, size), np.float32)
    cam[3, 8] = 1.0
    return cam


@pytest.fixture
def analysed(session, folders):
    """A done job of two scans, a PNG and a DICOM, with overlay/thumbnail/heatmap on disk."""
    from pydicom.data import get_testdata_file

    Image.fromarray(gradient_scan()).save(folders["scans"] / "a.png")
    shutil.copyfile(get_testdata_file("MR_small.dcm"), folders["scans"] / "mr.dcm")
    job = seed.add_job(session, folders["scans"], folders["model"] / "model.json")
    ids = seed.add_rows(session, job, [seed.Row("a.png", 0.9, artifacts="a"),
                                       seed.Row("mr.dcm", 0.2, artifacts="mr"),
                                       seed.Row("gone.png", None, ScanStatus.FAILED, "the file vanished")],
                        width=80, height=60)
    outputs = write_outputs(folders["outputs"] / "a", gradient_scan(), hot_spot())
    write_outputs(folders["outputs"] / "mr", gradient_scan(64, 64), hot_spot())
    session.query(Result).filter(Result.scan_id == ids[1]).update({"width": 64, "height": 64})
    session.query(Result).filter(Result.scan_id == ids[0]).update(
        {"peak_x": outputs.peak[0], "peak_y": outputs.peak[1]})
    session.commit()
    return job, ids, outputs


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def test_scan_page_shows_all_three_images_and_the_peak(signed_in, analysed):
    job, ids, outputs = analysed
    html = signed_in.get(f"/scans/{ids[0]}").get_data(as_text=True)
    for url in (f"/scans/{ids[0]}/original.png?frame=0", f"/results/", "heatmap.png", "overlay.png"):
        assert url in html
    assert f'cx="{outputs.peak[0]}" cy="{outputs.peak[1]}"' in html
    assert 'id="opacity"' in html and "tumor probability <b id=\"tumor-probability\">0.900" in html
    assert "format" in html and "PNG" in html  # image_info
    nav = re.search(r'id="scan-nav"([^>]*)>', html).group(1)
    assert f'data-next="/scans/{ids[1]}?frame=0"' in nav and "data-prev" not in nav  # first by p


def test_images_are_real_pngs_at_the_right_size(signed_in, analysed, session):
    job, ids, _ = analysed
    result = session.query(Result).filter(Result.scan_id == ids[0]).one()
    original = signed_in.get(f"/scans/{ids[0]}/original.png")
    assert original.status_code == 200 and png_size(original.data) == (80, 60)
    heatmap = signed_in.get(f"/results/{result.id}/heatmap.png")
    assert png_size(heatmap.data) == (80, 60)
    hot = np.asarray(Image.open(io.BytesIO(heatmap.data)))
    assert hot.shape == (60, 80, 3) and hot.std() > 0  # a coloured map, not a flat image
    overlay = signed_in.get(f"/results/{result.id}/overlay.png")
    assert png_size(overlay.get_data()) == (80, 60)
    thumb = signed_in.get(f"/results/{result.id}/thumbnail.jpg")
    assert thumb.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.get_data())).size[0] == 192
    assert "max-age" in heatmap.headers["Cache-Control"]
    layer = Image.open(io.BytesIO(signed_in.get(f"/results/{result.id}/heatmap.png?layer=1").data))
    alpha = np.asarray(layer)[..., 3]
    assert layer.mode == "RGBA" and alpha.min() == 0 and alpha.max() > 200  # cold see-through


def test_dicom_original_is_shown_as_png(signed_in, analysed):
    _, ids, _ = analysed
    response = signed_in.get(f"/scans/{ids[1]}/original.png")
    assert response.status_code == 200 and png_size(response.data) == (64, 64)
    assert signed_in.get(f"/scans/{ids[1]}/original.png?frame=3").status_code == 404


def test_failed_scan_page_says_why(signed_in, analysed):
    _, ids, _ = analysed
    html = signed_in.get(f"/scans/{ids[2]}").get_data(as_text=True)
    assert "the file vanished" in html and "original.png" not in html


def test_stored_paths_cannot_escape_their_folders(signed_in, analysed, session, tmp_path):
    _, ids, _ = analysed
    (tmp_path / "secret.png").write_bytes(b"secret")
    result = session.query(Result).filter(Result.scan_id == ids[0]).one()
    result.overlay = "../secret.png"
    result.scan.path = "../secret.png"
    session.commit()
    assert signed_in.get(f"/results/{result.id}/overlay.png").status_code == 404
    assert signed_in.get(f"/scans/{ids[0]}/original.png").status_code == 404


def test_scan_api_lists_frames_with_links(signed_in, analysed):
    _, ids, outputs = analysed
    body = signed_in.get(f"/api/scans/{ids[0]}").get_json()
    assert body["path"] == "a.png" and body["status"] == "done"
    (result,) = body["results"]
    assert result["peak"] == list(outputs.peak) and result["probabilities"]["tumor"] == 0.9
    for link in result["links"].values():
        assert signed_in.get(link).status_code == 200, link


def test_identifying_metadata_never_reaches_the_page(signed_in, analysed, session):
    _, ids, _ = analysed
    result = session.query(Result).filter(Result.scan_id == ids[0]).one()
    result.image_info = {"modality": "MR", "PatientName": "Doe^Jane", "patient_id": "12345",
                         "StudyDate": "20200101", "echo_time": "12"}
    session.commit()
    html = signed_in.get(f"/scans/{ids[0]}").get_data(as_text=True)
    assert "MR" in html and "echo_time" in html
    assert "Doe^Jane" not in html and "12345" not in html and "20200101" not in html
