"""mirec: multi-interest recommendation.

``mirec.load(folder)`` loads a trained model folder as a :class:`Recommender` (retrieval:
``recommend``) or a :class:`CTRScorer` (click probabilities: ``score``), described by its
:class:`ModelInfo` (:mod:`mirec.recommender`); ``mirec.train(...)`` trains one, as ``mirec
train`` does (:mod:`mirec.training_api`). Each is imported on first use, so the command line
starts without loading PyTorch for commands that do not need it.
"""

from __future__ import annotations

from typing import Any

from mirec.version import __version__

_PUBLIC = {
    "load": "mirec.recommender",
    "train": "mirec.training_api",
    "Recommender": "mirec.recommender",
    "CTRScorer": "mirec.recommender",
    "ModelInfo": "mirec.recommender",
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
