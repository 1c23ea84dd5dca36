"""The store's schema: SQLAlchemy 2.0 declarative models.

The schema changes only through Alembic (``migrations/``); nothing here calls ``create_all`` at
run time. Paths are stored relative to a job's root (scans) or to the output folder (artifacts),
so a store can move between hosts that mount the same storage elsewhere.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",  # every column, so two-column keys read clearly
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


OVERLAYS_ON_DEMAND, OVERLAYS_EAGER = "on-demand", "eager"
OVERLAY_MODES = (OVERLAYS_ON_DEMAND, OVERLAYS_EAGER)


class JobStatus(str, enum.Enum):
    PENDING = "pending"  # recorded, not yet enumerated
    ENUMERATING = "enumerating"  # walking the folder, scans being recorded
    RUNNING = "running"  # enumeration finished, batches under way
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"  # the job itself could not run (root vanished, model unreadable)


class ScanStatus(str, enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"  # never analysed: its DICOM series is not one to analyse (``error`` says why)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e], native_enum=False,
                length=16, validate_strings=True)


class Model(Base):
    """A classifier as described by its ``model.json``; identified by the digest of spec + weights."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    spec_path: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict] = mapped_column(JSON)
    card: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """One run of one model and one CAM method over one folder."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    root: Mapped[str] = mapped_column(Text)  # absolute folder the scan paths are relative to
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    method: Mapped[str] = mapped_column(String(32))
    # "on-demand": the full-size overlays are rendered when asked for (the web, export --overlays);
    # "eager": written with the scan's other outputs. None: a job from before the choice (eager).
    overlays: Mapped[str | None] = mapped_column(String(16), default=OVERLAYS_ON_DEMAND)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.PENDING)
    label_source: Mapped[str | None] = mapped_column(String(16))  # "folder" or "predicted"
    # Analyse every DICOM series, not only those the selection rules pass (``scan --all-series``).
    all_series: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    model: Mapped[Model] = relationship()
    scans: Mapped[list["Scan"]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                               passive_deletes=True)
    neuron_stats: Mapped["NeuronStats | None"] = relationship(back_populates="job",
                                                              cascade="all, delete-orphan")
    series: Mapped[list["Series"]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                  passive_deletes=True, order_by="Series.id")


class Series(Base):
    """One DICOM series of a job, known only by keyed hashes of its UIDs (``worker.series``).

    Described from the first of its files the walk read; ``slice_count``, ``spacing_mm`` and the
    series result are filled in when the job finishes. ``analysed`` False with ``reason`` in words:
    skipped by its tags (its scans are ``skipped``), or, when the job finished, too few slices or
    images mostly outside the model's experience.
    """

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("job_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))  # HMAC of SeriesInstanceUID
    study_key: Mapped[str] = mapped_column(String(64))  # HMAC of StudyInstanceUID
    number: Mapped[int | None] = mapped_column(Integer)  # SeriesNumber
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)  # SeriesDescription, identifiers cut out
    image_type: Mapped[list | None] = mapped_column(JSON)
    orientation: Mapped[str | None] = mapped_column(String(16))
    slice_count: Mapped[int | None] = mapped_column(Integer)
    spacing_mm: Mapped[float | None] = mapped_column(Float)
    spacing_from: Mapped[str | None] = mapped_column(String(32))
    sequence: Mapped[str | None] = mapped_column(String(32))
    sequence_because: Mapped[str | None] = mapped_column(Text)
    analysed: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(Text)
    tumor_probability: Mapped[float | None] = mapped_column(Float)  # the series' aggregate
    result: Mapped[dict | None] = mapped_column(JSON)  # how it was aggregated, strongest slice, runs

    job: Mapped[Job] = relationship(back_populates="series")


class Scan(Base):
    """One file found under a job's root; a multi-frame DICOM has one Result per frame."""

    __tablename__ = "scans"
    __table_args__ = (
        UniqueConstraint("job_id", "path"),
        Index("ix_scans_job_id_status", "job_id", "status"),
        Index("ix_scans_job_id_sha256", "job_id", "sha256"),
        Index("ix_scans_sha256", "sha256"),  # finds earlier jobs' results for the same content
        Index("ix_scans_series_id", "series_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # relative to the job root, POSIX separators
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[ScanStatus] = mapped_column(_enum(ScanStatus, "scan_status"), default=ScanStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    label: Mapped[int | None] = mapped_column(Integer)  # 1 = YES folder, 0 = NO folder, None = unknown
    frames: Mapped[int | None] = mapped_column(Integer)  # None for a single image
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("scans.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A DICOM slice: its series, and where it lies (mm along the slice normal, InstanceNumber);
    # a multi-frame file keeps each frame's position. slice_index (anatomical order from 0 in the
    # series; a multi-frame file's first, frame_slices each frame's) is set when the job finishes.
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id", ondelete="SET NULL"))
    position_mm: Mapped[float | None] = mapped_column(Float)
    instance: Mapped[int | None] = mapped_column(Integer)
    frame_positions: Mapped[list | None] = mapped_column(JSON)
    slice_index: Mapped[int | None] = mapped_column(Integer)
    frame_slices: Mapped[list | None] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="scans")
    results: Mapped[list["Result"]] = relationship(back_populates="scan", cascade="all, delete-orphan",
                                                   passive_deletes=True, order_by="Result.frame")


class Result(Base):
    """The analysis of one image (one frame of a scan)."""

    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("scan_id", "frame"),
        Index("ix_results_job_id_tumor_probability", "job_id", "tumor_probability"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))  # for report queries
    frame: Mapped[int] = mapped_column(Integer, default=0)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    predicted_class: Mapped[str] = mapped_column(String(100))
    tumor_probability: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(32))
    peak_x: Mapped[int] = mapped_column(Integer)
    peak_y: Mapped[int] = mapped_column(Integer)
    overlay: Mapped[str] = mapped_column(Text)  # relative to the output folder
    thumbnail: Mapped[str] = mapped_column(Text)
    heatmap: Mapped[str] = mapped_column(Text)
    image_info: Mapped[dict | None] = mapped_column(JSON)  # non-identifying metadata only
    # Distance from the model's training distribution over its limit: above 1, outside the
    # model's experience; None when the model ships no in-distribution statistics.
    ood_score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    scan: Mapped[Scan] = relationship(back_populates="results")


class NeuronPartial(Base):
    """Sufficient statistics of one batch's neuron vectors; merged into NeuronStats at the end.

    Keyed by (job, batch key) so a redelivered batch overwrites rather than adds.
    """

    __tablename__ = "neuron_partials"
    __table_args__ = (UniqueConstraint("job_id", "batch_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    batch_key: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class NeuronStats(Base):
    """Job-level neuron statistics: per-neuron correlation with the class label."""

    __tablename__ = "neuron_stats"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    label_source: Mapped[str] = mapped_column(String(16))
    n_scans: Mapped[int] = mapped_column(Integer)
    n_neurons: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict] = mapped_column(JSON)  # top positive / negative neurons, class means
    correlations: Mapped[bytes] = mapped_column(LargeBinary)  # float32 array, one value per neuron
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                                    server_default=func.now())

    job: Mapped[Job] = relationship(back_populates="neuron_stats")
