"""One settings object, read at the edge (CLI, worker start) and passed down.

Values come from ``RETOUCH_*`` environment variables, then a settings file
(``RETOUCH_SETTINGS_FILE``, default ``retouch.env`` in the working directory),
then the defaults below. No module below the edge reads the environment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_model_dir() -> str:
    return str(Path.home() / ".cache" / "retouch" / "models")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RETOUCH_", env_file=os.environ.get("RETOUCH_SETTINGS_FILE", "retouch.env"),
        env_file_encoding="utf-8", extra="ignore",
    )

    model_dir: str = Field(default_factory=default_model_dir, description="model store directory")
    max_pixels: int = Field(100_000_000, description="refuse images with more pixels (decompression bombs)")
    device: str = Field("auto", description="auto | cpu | cuda:N")


def load_settings(**overrides) -> Settings:
    """Settings from env and file, with explicit (CLI) overrides that are not None."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
