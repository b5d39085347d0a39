"""Extractors: a history in, K interests out (:class:`~mirec.core.contracts.Extractor`).
Each registers itself here under its config name (``Config.extractor``)."""

from __future__ import annotations

from mirec.core.contracts import Extractor
from mirec.core.registry import Registry

EXTRACTORS: Registry[type[Extractor]] = Registry("extractor", __name__)
