"""Training-time interest selection: which of the K interests (or which mix) a training
example trains (:data:`~mirec.core.contracts.Selector`). Each registers here, under its
config name (``Config.selector``), a factory ``(config) -> Selector``."""

from __future__ import annotations

from collections.abc import Callable

from mirec.core.config import Config
from mirec.core.contracts import Selector
from mirec.core.registry import Registry

SELECTORS: Registry[Callable[[Config], Selector]] = Registry("selector", __name__)
