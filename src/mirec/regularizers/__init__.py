"""Regularizers against collapse, by name, with the weights given in a config string.

``regularizer: "covariance:100"`` or ``"disagreement:0.1,contrastive:0.05"`` (or SINE's
``concept_covariance``): each entry
is ``name:weight``, and the training loss adds ``weight * penalty``. Every penalty has the
signature ``(extracted, history_embeddings, mask) -> scalar`` and registers itself here
under its name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from mirec.core.config import bad_setting
from mirec.core.contracts import Extracted
from mirec.core.registry import Registry

Penalty = Callable[[Extracted, torch.Tensor, torch.Tensor], torch.Tensor]

REGULARIZERS: Registry[Callable[..., torch.Tensor]] = Registry("regularizer", __name__)


def parse_regularizers(
    spec: str | None, contrastive_temperature: float = 0.1
) -> list[tuple[str, float, Penalty]]:
    """``"name:weight,..."`` -> [(name, weight, penalty)]; None or "" -> []. A missing
    weight is 1; an unknown name or a weight that is not a finite number >= 0 is the
    ConfigError of the setting ``regularizer``."""
    out: list[tuple[str, float, Penalty]] = []
    for entry in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, _, raw = entry.partition(":")
        penalties = REGULARIZERS.entries()
        if name not in penalties:
            bad_setting("regularizer", spec, f"unknown {name!r}; known: {', '.join(penalties)}")
        try:
            weight = float(raw) if raw else 1.0
        except ValueError:
            bad_setting("regularizer", spec, f"the weight of {name} must be a number, not {raw!r}")
        if not (math.isfinite(weight) and weight >= 0):
            bad_setting("regularizer", spec, f"the weight of {name} must be a finite number >= 0")
        penalty = penalties[name]
        if name == "contrastive":
            penalty = partial(penalty, temperature=contrastive_temperature)
        out.append((name, weight, penalty))
    return out
