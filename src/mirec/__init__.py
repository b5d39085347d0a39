"""mirec: multi-interest recommendation.

``from mirec import Recommender`` loads a trained model folder and recommends
(:mod:`mirec.recommender`). It is imported on first use, so the command line starts
without loading PyTorch for commands that do not need it.
"""

from __future__ import annotations

from typing import Any

from mirec.version import __version__

_PUBLIC = {
    "Recommender": "mirec.recommender",
    "Recommendation": "mirec.recommender",
    "Recommendations": "mirec.recommender",
    "MirecError": "mirec.errors",
    "ConfigError": "mirec.errors",
    "DataError": "mirec.errors",
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mirec' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_PUBLIC[name]), name)
