"""Build scan files for tests: good synthetic scans, real DICOM files, and a corpus of bad input."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

# Identifying values a DICOM from make_dicom(phi=True) carries; none may ever leave the reader.
PHI = {
    "PatientName": "Doe^Jane^Quincy",
    "PatientID": "PID-4711-0815",
    "PatientBirthDate": "19610203",
    "PatientAge": "062Y",
    "PatientAddress": "12 Elm Street Springfield",
    "OtherPatientIDs": "OPID-5523-77",
    "AccessionNumber": "ACC-99812",
    "InstitutionName": "Saint Example Hospital",
    "InstitutionAddress": "1 Hospital Road Shelbyville",
    "ReferringPhysicianName": "Welby^Marcus",
    "PerformingPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Terry",
    "StudyDate": "20240117",
    "StudyTime": "101530",
    "StudyID": "STUDY-3141",
    "StudyDescription": "Head MRI for Jane Doe",
    "SeriesDescription": "T1 axial Doe Jane",
    "ProtocolName": "Jane Doe tumour follow-up",
    "ImageComments": "Patient Jane Doe, born 1961-02-03",
    "StationName": "MRI-ROOM-7",
    "DeviceSerialNumber": "SN-0042-XYZ",
}
# Plausible acquisition numbers for synthetic files; a wrapped real image leaves them out.
ACQUISITION = {"MagneticFieldStrength": 1.5, "SliceThickness": 5.0, "PixelSpacing": [0.5, 0.5]}
GOOD_KINDS = (("jpg", "RGB"), ("png", "L"), ("bmp", "RGB"), ("tif", "L"), ("png", "RGB"), ("jpg", "L"))


@dataclass
class ScanCorpus:
    """Files written by write_bad_scans: those that must fail and those that must read."""

    bad: dict[str, Path] = field(default_factory=dict)  # each must end as a ScanError
    good: dict[str, Path] = field(default_factory=dict)  # awkward but valid: each must read

    @property
    def all(self) -> dict[str, Path]:
        """Return every entry, bad and good, by kind."""
        return {**self.bad, **self.good}


def synthetic_slice(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Return a (height, width) uint8 head-like oval with a bright blob somewhere inside."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    x, y = xx / width - 0.5, yy / height - 0.5
    head = (x / 0.42) ** 2 + (y / 0.46) ** 2 <= 1
    cx, cy, radius = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.14)
    blob = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    image = 20 + head * 90.0 + blob * 120.0 + rng.normal(0, 10, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_good_scans(folder: Path, n: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> list[Path]:
    """Write n distinct synthetic scans of size (width, height), cycling JPEG/PNG/BMP/TIFF, gray/RGB."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n):
        suffix, mode = GOOD_KINDS[index % len(GOOD_KINDS)]
        gray = synthetic_slice(rng, size)
        image = Image.fromarray(gray) if mode == "L" else Image.fromarray(_tinted(gray, rng))
        path = folder / f"scan_{seed}_{index:03d}.{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def make_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", frames: int = 1,
               transfer_syntax: str = uid.ExplicitVRLittleEndian, phi: bool = True,
               window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
               sop_class: str = uid.MRImageStorage, acquisition: bool = True,
               extra: dict | None = None) -> Path:
    """Write a real DICOM file with pydicom.

    pixels is (H, W) gray or (H, W, 3) RGB, with a leading frame axis for several frames (or the
    same image repeated `frames` times); uint8, uint16 or int16. window is (center, width),
    rescale is (slope, intercept); acquisition adds ACQUISITION's numbers; extra sets further
    elements by keyword. Identifiers derive from the pixels, so equal input gives equal bytes.
    """
    pixels = np.asarray(pixels)
    single_ndim = 3 if photometric == "RGB" else 2
    if pixels.ndim == single_ndim:
        pixels = np.stack([pixels] * frames)
    ds = _image_dataset(pixels, photometric, sop_class)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    elements = {**(ACQUISITION if acquisition else {}), **(PHI if phi else {}), **(extra or {})}
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if uid.UID(transfer_syntax).is_compressed:
        ds.compress(transfer_syntax, generate_instance_uid=False)  # keep the content-derived UID
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_bad_scans(folder: Path) -> ScanCorpus:
    """Write at least 15 kinds of bad input, and awkward-but-valid files, into folder.

    "unreadable" is a file with no read permission; where that cannot stop the reader (root
    reads anything), it is a named pipe named like a JPEG instead, which a reader must never
    open (opening it would wait forever for a writer).
    "loop.jpg" is a link to the folder holding it, so a walker that follows links never ends.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    corpus = ScanCorpus()
    for kind, writer in _BAD_WRITERS.items():
        corpus.bad[kind] = writer(folder, rng)
    for kind, writer in _GOOD_WRITERS.items():
        corpus.good[kind] = writer(folder, rng)
    return corpus


def png_header_only(width: int, height: int) -> bytes:
    """Return a small PNG that declares a huge size: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096)  # a sliver of the rows it promises
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _tinted(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shift = rng.integers(-12, 13, size=3)
    return np.clip(gray[..., None].astype(np.int16) + shift, 0, 255).astype(np.uint8)


def _uids(pixels: np.ndarray) -> list[str]:
    # Derived from the content so the same pixels always give the same file (reproducible samples).
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    return [uid.generate_uid(entropy_srcs=[digest, role]) for role in ("sop", "study", "series")]


def _image_dataset(pixels: np.ndarray, photometric: str, sop_class: str) -> Dataset:
    sop, study, series = _uids(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, sop
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality = "MR"
    ds.Rows, ds.Columns = pixels.shape[1:3]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if len(pixels) > 1:
        ds.NumberOfFrames = len(pixels)
    ds.PixelData = pixels.tobytes()
    return ds


def rewrite_dicom(path: Path, change: Callable[[Dataset], None]) -> Path:
    """Read a DICOM file, let change edit the dataset, and write it back in place."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


def _image_bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _gray(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(synthetic_slice(rng, (48, 40)))


def _gray16(rng: np.random.Generator, gain: int) -> Image.Image:
    return Image.fromarray(np.asarray(_gray(rng), np.uint16) * gain)


def _rgb(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(_tinted(synthetic_slice(rng, (48, 40)), rng))


def _mono_dicom(folder: Path, rng: np.random.Generator, name: str) -> Path:
    return make_dicom(folder / name, synthetic_slice(rng, (48, 40)).astype(np.uint16) * 8, phi=False)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 3 // 5]


def _corrupt_jpeg_header(data: bytes) -> bytes:
    start = data.index(b"\xff\xc0")  # the frame header: size, precision and components
    return data[:start + 4] + bytes([0, 0xFF, 0xFF, 0xFF, 0xFF, 0x77]) + data[start + 10:]


def _damage_png_data(data: bytes) -> bytes:
    start = data.index(b"IDAT") + 12  # past the zlib header, into the compressed rows
    return data[:start] + bytes(b ^ 0x5A for b in data[start:start + 64]) + data[start + 64:]


def _unreadable(folder: Path) -> Path:
    path = folder / "unreadable.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root: permissions do not stop it, so make it a pipe instead
        path.unlink()
        os.mkfifo(path)
    return path


def _symlink(path: Path, target: str, directory: bool = False) -> Path:
    path.symlink_to(target, target_is_directory=directory)
    return path


def _dicom_without_pixels(folder: Path, rng: np.random.Generator) -> Path:
    def drop_pixels(ds: Dataset) -> None:
        del ds.PixelData

    return rewrite_dicom(_mono_dicom(folder, rng, "no_pixels.dcm"), drop_pixels)


def _dicom_short_pixels(folder: Path, rng: np.random.Generator) -> Path:
    def shorten(ds: Dataset) -> None:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    return rewrite_dicom(_mono_dicom(folder, rng, "short_pixels.dcm"), shorten)


def _dicom_no_decoder(folder: Path, rng: np.random.Generator) -> Path:
    def to_video(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])  # an MPEG-2 sequence start

    return rewrite_dicom(_mono_dicom(folder, rng, "video.dcm"), to_video)


def _dicom_truncated(folder: Path, rng: np.random.Generator) -> Path:
    path = _mono_dicom(folder, rng, "truncated.dcm")
    return _write(path, path.read_bytes()[:-1500])


def _dicom_no_suffix(folder: Path, rng: np.random.Generator) -> Path:
    path = _mono_dicom(folder, rng, "IM0001.dcm")
    return path.rename(folder / "IM0001")


def _exif_rotated(folder: Path, rng: np.random.Generator) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = folder / "rotated.jpg"
    _gray(rng).save(path, exif=exif)
    return path


def _palette_png(folder: Path, rng: np.random.Generator) -> Path:
    path = folder / "palette.png"
    _rgb(rng).quantize(16).save(path, transparency=0)
    return path


_BAD_WRITERS: dict[str, Callable[[Path, np.random.Generator], Path]] = {
    "empty": lambda f, r: _write(f / "empty.jpg", b""),
    "truncated_jpeg": lambda f, r: _write(f / "truncated.jpg", _truncated(_image_bytes(_rgb(r), "JPEG"))),
    "truncated_png": lambda f, r: _write(f / "truncated.png", _truncated(_image_bytes(_rgb(r), "PNG"))),
    "text_jpg": lambda f, r: _write(f / "notes.jpg", b"Scan list for Monday\nbed 4: repeat T2\n"),
    "random_png": lambda f, r: _write(f / "noise.png", r.bytes(3000)),
    "bomb_png": lambda f, r: _write(f / "bomb.png", png_header_only(30_000, 30_000)),
    "large_png": lambda f, r: _write(f / "large.png", png_header_only(12_000, 10_000)),
    "gif_png": lambda f, r: _write(f / "animation.png", _image_bytes(_rgb(r), "GIF")),
    "corrupt_header_jpeg": lambda f, r: _write(
        f / "bad_header.jpg", _corrupt_jpeg_header(_image_bytes(_gray(r), "JPEG"))),
    "damaged_png": lambda f, r: _write(f / "damaged.png", _damage_png_data(_image_bytes(_rgb(r), "PNG"))),
    "html_dcm": lambda f, r: _write(
        f / "portal.dcm", b"<!DOCTYPE html>\n<html><body>Session expired, please log in</body></html>\n"),
    "dicom_no_pixels": _dicom_without_pixels,
    "dicom_truncated": _dicom_truncated,
    "dicom_short_pixels": _dicom_short_pixels,
    "dicom_no_decoder": _dicom_no_decoder,
    "unreadable": lambda f, r: _unreadable(f),
    "directory": lambda f, r: _mkdir(f / "series.jpg"),
    "loop": lambda f, r: _symlink(f / "loop.jpg", ".", directory=True),
    "self_link": lambda f, r: _symlink(f / "self.png", "self.png"),
    "broken_link": lambda f, r: _symlink(f / "broken.png", "moved_away.png"),
}

_GOOD_WRITERS: dict[str, Callable[[Path, np.random.Generator], Path]] = {
    "gray16_png": lambda f, r: _save(_gray16(r, 200), f / "gray16.png"),
    "gray16_tiff": lambda f, r: _save(_gray16(r, 16), f / "gray16.tif"),
    "palette_png": _palette_png,
    "rgba_png": lambda f, r: _save(_rgb(r).convert("RGBA"), f / "rgba.png"),
    "cmyk_jpeg": lambda f, r: _save(_rgb(r).convert("CMYK"), f / "cmyk.jpg"),
    "gray_jpeg": lambda f, r: _save(_gray(r), f / "gray.jpg"),
    "upper_case": lambda f, r: _save(_rgb(r), f / "UPPER.JPG"),
    "png_named_jpg": lambda f, r: _write(f / "really_png.jpg", _image_bytes(_gray(r), "PNG")),
    "rgb_bmp": lambda f, r: _save(_rgb(r), f / "rgb.bmp"),
    "exif_rotated": _exif_rotated,
    "dicom_no_suffix": _dicom_no_suffix,
}


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
