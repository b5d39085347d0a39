"""Training from Python: :func:`train`, ``mirec train`` as a function that returns the model.

    import mirec
    rec = mirec.train(dataset="ml-100k", model="comirec-sa", output_dir="runs/ml100k-sa")
    rec.recommend([50, 172, 181], n=10)

It lives above :mod:`mirec.recommender` so that loading and serving a model folder never
import the training stack (:mod:`mirec.runs`, :mod:`mirec.auto`, :mod:`mirec.training`;
an import-linter contract keeps it so); this module imports that stack only when
:func:`train` is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirec.config import load_plan
from mirec.recommender import CTRScorer, Recommender, _path, load


def train(
    *,
    output_dir: str | Path,
    dataset: str | None = None,
    model: str | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | Path | None = None,
    **settings: Any,
) -> Recommender | CTRScorer:
    """Train a published config (``mirec models``; without ``model``, ``auto``: the best
    of :data:`~mirec.config.AUTO_CANDIDATES` on validation, :mod:`mirec.auto`) on
    ``dataset`` with ``settings`` (any field of :class:`~mirec.config.Config`), as
    ``mirec train`` does: the best weights on validation Recall@50 are tested and the run
    folder is written to ``output_dir``; returns the loaded model (:func:`mirec.load`: a
    :class:`~mirec.recommender.Recommender`, or a :class:`~mirec.recommender.CTRScorer`
    for ``task="ctr"``). A folder holding a run is refused unless ``resume`` (continue an
    interrupted run with these settings from its last finished epoch) or ``overwrite``
    (train again), as :func:`~mirec.runs.train_run` says. ``init_from``: fine-tune that
    model folder on ``dataset`` (:mod:`mirec.training.warm_start`)."""
    # the training stack, only to train: importing mirec (or this module) stays light
    from mirec.auto import train_plan

    out = _path(output_dir, "output_dir")
    train_plan(
        load_plan(
            model,
            fixed=settings,
            dataset=dataset,
            init_from=None if init_from is None else str(_path(init_from, "init_from")),
        ),
        out,
        data_dir=None if data_dir is None else _path(data_dir, "data_dir"),
        progress=progress,
        resume=resume,
        overwrite=overwrite,
        echo=print if progress else lambda _: None,
    )
    return load(out)
