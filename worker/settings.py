"""One settings object, read from the environment (prefix ``TUMORLENS_``) once."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_SECRET = "dev-only-not-secret"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
UID_KEY_LABEL = b"tumorlens: the key DICOM UIDs are hashed under, v1"


class Settings(BaseSettings):
    """Everything configurable about a tumorlens process."""

    model_config = SettingsConfigDict(env_prefix="TUMORLENS_", extra="ignore")

    env: str = "development"  # "production" refuses the built-in secret
    home: Path = Path.home() / ".tumorlens"
    database_url: str | None = None
    broker_url: str | None = None
    output_dir: Path | None = None
    scan_roots: Annotated[list[Path], NoDecode] = []  # os.pathsep-separated in the environment
    secret_key: str = DEV_SECRET
    model: Path = DEFAULT_MODEL
    batch_size: int = 16
    # Seconds a queued batch may run before it is given back and split (the slow scan then fails
    # on its own). 10 minutes covers 16 large DICOM frames under Score-CAM on one slow core.
    batch_time_limit: int = Field(10 * 60, ge=10)
    # The web's cache of on-demand overlays (docs/scaling.md sizes it): ~0.3 MiB an overlay of a
    # 512 px slice, so the default keeps the last ~3,000 viewed.
    overlay_cache_dir: Path | None = None  # default <home>/cache/overlays
    overlay_cache_mb: int = Field(1024, ge=1)

    @field_validator("scan_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        if self.env == "production" and self.secret_key in ("", DEV_SECRET):
            raise ValueError("TUMORLENS_SECRET_KEY must be set to a real secret in production")
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'tumorlens.db'}"
        if self.output_dir is None:
            self.output_dir = self.home / "outputs"
        if self.overlay_cache_dir is None:
            self.overlay_cache_dir = self.home / "cache" / "overlays"
        return self


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()


def dicom_uid_key(settings: Settings | None = None) -> bytes:
    """Return the 32-byte key this installation hashes DICOM UIDs under (``pipeline.io.series.uid_key``).

    It is HMAC-SHA256(TUMORLENS_SECRET_KEY, ``UID_KEY_LABEL``): the same for the web and every
    worker of one installation, so a series gets the same key in every job; unknown without the
    secret, so nobody holding a store or an export can confirm a guessed UID; and apart from the
    secret's other uses (the web's sessions): a UID hash reveals nothing of the secret and a
    session cannot be signed with it. Changing the secret changes every series key from then on.
    """
    secret = (settings or get_settings()).secret_key.encode("utf-8")
    return hmac.new(secret, UID_KEY_LABEL, hashlib.sha256).digest()
