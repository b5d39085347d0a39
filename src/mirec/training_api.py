"""Training from Python: :func:`train`, ``mirec train`` as a function that returns the model.

    import mirec
    rec = mirec.train(dataset="ml-100k", model="comirec-sa", output_dir="runs/ml100k-sa")
    rec.recommend([50, 172, 181], n=10)

    # or from a pandas or polars DataFrame, or a pyarrow Table (mirec.data.frames)
    rec = mirec.train(data=df, user="user_id", item="item_id", time="ts", model="sasrec",
                      output_dir="runs/mine")

It lives above :mod:`mirec.recommender` so that loading and serving a model folder never
import the training stack (:mod:`mirec.runs`, :mod:`mirec.auto`, :mod:`mirec.training`;
an import-linter contract keeps it so); this module imports that stack only when
:func:`train` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirec.config import load_plan
from mirec.data.frames import FILE_SETTINGS, FrameLog, frame_log
from mirec.errors import ConfigError, DataError
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
    data: object = None,
    user: str | None = None,
    item: str | None = None,
    time: str | None = None,
    category: str | None = None,
    title: str | None = None,
    track: str | Sequence[str] = (),
    tracking_uri: str | None = None,
    experiment_name: str | None = None,
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
    model folder on ``dataset`` (:mod:`mirec.training.warm_start`).

    ``data``, instead of ``dataset``: a pandas or polars DataFrame or a pyarrow Table, one
    row per interaction, whose columns ``user`` and ``item`` (and, where given, ``time``:
    numbers of seconds, datetimes or dates; ``category``) name. It trains as the same rows
    in a file would with ``format="interactions"`` and ``columns``, to the same weights;
    a bad table is refused with the file's one-line error, its row counted from 1 (``row
    1`` is ``df.iloc[0]``), before anything is written to ``output_dir``. ``title`` is
    refused for now: an ``interactions`` file has no title column. The run records
    the rows' copy in the cache as its ``dataset`` (:mod:`mirec.data.frames`), so
    ``resume`` with the same rows continues the run.

    ``track``: ``"mlflow"``, ``"tensorboard"`` or both (a list, or ``"mlflow,tensorboard"``)
    log the run as ``mirec train --track`` does, into ``tracking_uri`` and
    ``experiment_name`` for MLflow (:func:`mirec.tracking.open_tracker`, docs/tracking.md)."""
    # the training stack, only to train: importing mirec (or this module) stays light
    from mirec.auto import train_plan
    from mirec.tracking import backend_names, open_tracker

    out = _path(output_dir, "output_dir")
    frame = _frame_log(data, dataset, settings, user=user, item=item, time=time,
                       category=category, title=title)  # fmt: skip
    if frame is not None:
        dataset = frame.dataset
        settings = {**settings, **frame.settings()}
    start = None if init_from is None else str(_path(init_from, "init_from"))
    names = backend_names([track] if isinstance(track, str) else track, tracking_uri,
                          experiment_name)  # fmt: skip
    try:
        train_plan(
            load_plan(model, fixed=settings, dataset=dataset, init_from=start),
            out,
            data_dir=None if data_dir is None else _path(data_dir, "data_dir"),
            progress=progress,
            resume=resume,
            overwrite=overwrite,
            echo=print if progress else lambda _: None,
            tracker=open_tracker(names, out, tracking_uri, experiment_name),
        )
    except DataError as err:
        if frame is None:
            raise
        raise frame.named(err) from err
    return load(out)


def _frame_log(
    data: object,
    dataset: str | None,
    settings: dict[str, Any],
    **columns: str | None,
) -> FrameLog | None:
    """``data`` checked and written as an ``interactions`` log, or None without it; its
    column arguments without ``data``, or a file's settings with it, are refused."""
    if data is None:
        given = [f"{k}=" for k, v in columns.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: name columns of data=, which is not given")
        return None
    clash = [k for k in FILE_SETTINGS if (dataset if k == "dataset" else settings.get(k))]
    if clash:
        raise ConfigError(
            f"data= and {', '.join(f'{k}=' for k in clash)}: give the rows as data= (with "
            "user=, item=, time=, category=) or a file as dataset=, not both"
        )
    return frame_log(data, **columns, id_type=settings.get("id_type"))
