"""matplotlib set up for files only (no display), and figures written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, none opened

import matplotlib.pyplot as plt

from mirec.atomic import atomic_path


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as PNG to ``path`` (through a temp file, so a reader never sees half a
    file) and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
