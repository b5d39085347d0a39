"""Where mirec keeps files when the user names no folder: the platform's cache folder
(platformdirs: ``~/.cache/mirec`` on Linux, ``~/Library/Caches/mirec`` on macOS,
``%LOCALAPPDATA%\\mirec\\Cache`` on Windows), or the folders the environment names."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_DIR_VAR, CACHE_DIR_VAR = "MIREC_DATA_DIR", "MIREC_CACHE_DIR"


def user_cache_dir() -> Path:
    """The platform's cache folder for mirec."""
    return platformdirs.user_cache_path("mirec", appauthor=False)


def cache_dir() -> Path:
    """Preprocessed datasets: ``$MIREC_CACHE_DIR``, else :func:`user_cache_dir`."""
    env = os.environ.get(CACHE_DIR_VAR)
    return Path(env).expanduser() if env else user_cache_dir()


def default_data_dir() -> Path:
    """Datasets (``mirec download``): ``$MIREC_DATA_DIR``, else ``data`` in
    :func:`user_cache_dir`."""
    env = os.environ.get(DATA_DIR_VAR)
    return Path(env).expanduser() if env else user_cache_dir() / "data"
