"""The ``mirec`` command line: train, evaluate, diagnose, compare, inspect, recommend, index,
export, serve, experiment, quickstart, datasets, download, models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mirec.cli import tables
from mirec.config import (
    AUTO_CANDIDATES,
    AUTO_MODEL,
    TrainingPlan,
    load_config,
    load_plan,
    model_names,
    model_summary,
)
from mirec.core import launch
from mirec.errors import ConfigError, MirecError

app = typer.Typer(
    help="Multi-interest recommendation: train, evaluate and inspect K-interest retrievers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where datasets live (default: $MIREC_DATA_DIR, else the platform cache folder: "
        "~/.cache/mirec/data on Linux).",
        readable=False,  # mirec says itself when a folder cannot be read
    ),
]


def _print_version(asked: bool) -> None:
    if asked:
        from mirec.version import __version__

        typer.echo(f"mirec {__version__}")
        raise typer.Exit()


@app.callback()
def _every_command(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """Multi-interest recommendation: train, evaluate and inspect K-interest retrievers."""
    if launch.world_size() > 1 and context.invoked_subcommand != "train":
        raise ConfigError(
            f"mirec {context.invoked_subcommand}: runs in one process; of the commands, "
            "only `mirec train` runs under torchrun"
        )


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
ModelDir = Annotated[
    Path,
    typer.Option(
        "--model-dir",
        "--checkpoint",  # its name before 0.4, kept working
        help="A model folder: the output directory of `mirec train`.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="PyTorch threads (default: $OMP_NUM_THREADS, else the cores this process may "
        "use). Several jobs on one machine: give each its share of the cores.",
    ),
]
Track = Annotated[
    list[str] | None,
    typer.Option(
        "--track",
        help="Log the runs to mlflow and/or tensorboard (repeat, or a comma list; needs "
        "mirec[track]; docs/tracking.md).",
    ),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow's tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite database "
        "mlflow.db in the output folder's parent)."
    ),
]
ExperimentName = Annotated[
    str | None, typer.Option(help="The MLflow experiment of the runs (default: mirec).")
]


@app.command()
def train(
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Registry name (see `mirec datasets`), a path (with --format interactions also "
            "a folder or glob of Parquet parts; prepared out of core, memory capped by "
            "$MIREC_INGEST_MEMORY), or synthetic[:n_users=...,n_items=...]."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Published config (see `mirec models`), or auto (the retrieval default): "
            "train sasrec, comirec-sa-transformer and remi-plain, keep the best on validation "
            "Recall@50 (about 3x one model's time)."
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="retrieval (default) or ctr (click-through rate: AUC, GAUC, LogLoss)."),
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where config, weights and metrics go.")] = ...,
    format: Annotated[
        str | None,
        typer.Option(
            help="File format when --dataset is a path: sequences | interactions | movielens | "
            "movielens-100k | movielens-sequences | taobao."
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="For --format interactions: user,item[,timestamp][,category] column names."
        ),
    ] = None,
    sep: Annotated[
        str | None, typer.Option(help="Field separator for --format interactions.")
    ] = None,
    id_type: Annotated[
        str | None,
        typer.Option(
            help="int or str: how user and item ids are read (default: integers when every id "
            "is one, text when most are not; a mostly-integer column with odd lines is an error)."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A YAML file of settings.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value.")
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Fine-tune this model folder on --dataset (the grown log): its settings and "
            "learned rows, new items at their category's mean; the folder is left as it is.",
        ),
    ] = None,
    data_dir: DataDir = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the interrupted run in --output-dir from its last finished epoch "
            "(same settings; the result is the uninterrupted run's); a finished run is kept."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run in --output-dir (once the new one finishes).")
    ] = False,
    quiet: Quiet = False,
    threads: Threads = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Train one model in N processes on this machine (DDP; torchrun started for "
            "you). Give each its share of the cores with --threads.",
        ),
    ] = None,
    track: Track = None,
    tracking_uri: TrackingUri = None,
    experiment_name: ExperimentName = None,
) -> None:
    """Train a model, keep its best weights on validation Recall@50, and test them."""
    from mirec.tracking import NO_TRACKING, backend_names, open_tracker

    if resume and overwrite:
        raise MirecError("--resume and --overwrite: give one (continue the run, or replace it)")
    backends = backend_names(track or (), tracking_uri, experiment_name)
    if nproc_per_node is not None and launch.world_size() > 1:
        raise MirecError("--nproc-per-node: this process was started by torchrun already")
    plan = load_plan(
        model,
        config,
        set_ or (),
        dataset=dataset,
        format=format,
        columns=columns,
        sep=sep,
        id_type=id_type,
        task=task,
        init_from=None if init_from is None else str(init_from),
    )
    if nproc_per_node is not None:
        _launch_workers(plan, nproc_per_node, threads)
    # in a torchrun job rank 0 tracks, as it alone reports
    tracker = (
        NO_TRACKING
        if launch.is_secondary()
        else open_tracker(backends, output_dir, tracking_uri, experiment_name)
    )
    _use_threads(threads)
    from mirec.auto import train_plan  # torch: only once the settings are known to be good

    result = train_plan(
        plan,
        output_dir,
        data_dir=data_dir,
        progress=not quiet,
        resume=resume,
        overwrite=overwrite,
        echo=typer.echo,
        tracker=tracker,
    )
    if launch.is_secondary():
        return  # rank 0 reports the run of a torchrun job
    tables.print_training(result)
    typer.echo(f"results: {output_dir / 'metrics.json'}")


def _launch_workers(plan: TrainingPlan, nproc_per_node: int, threads: int | None) -> None:
    """``--nproc-per-node N``: this process becomes torchrun's agent for N workers, each
    running this command; a bad setting is refused first, before any worker starts."""
    from mirec.models.build import check_components  # torch: the components' registries

    check_components(plan.candidates[0])
    if plan.selected_on is not None:
        raise ConfigError(
            f"--nproc-per-node: model {AUTO_MODEL} trains its candidates one after another "
            "in one process; name one model (--model)"
        )
    from mirec.training.launcher import launch_workers

    raise typer.Exit(launch_workers(nproc_per_node, sys.argv[1:], threads))


@app.command()
def evaluate(
    model_dir: ModelDir,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where metrics.json goes (default: MODEL_DIR/evaluation).")
    ] = None,
    mask_history: Annotated[
        bool,
        typer.Option(help="Remove history items from the candidates (not the protocol's default)."),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change an inference-time setting: adaptive_k, diversity_lambda, quota_alpha, "
            "quota_half_life or device.",
        ),
    ] = None,
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """Evaluate a model folder's best weights on its validation and test users (the model
    folder holds everything needed; no dataset is read)."""
    from mirec.config import parse_overrides
    from mirec.models.folder import EVALUATION_DIR
    from mirec.runs import evaluate_folder

    _use_threads(threads)
    out = output_dir or model_dir / EVALUATION_DIR
    evaluation = evaluate_folder(
        model_dir,
        out,
        mask_history=mask_history,
        overrides=parse_overrides(set_ or ()),
        progress=not quiet,
    )
    tables.print_results({evaluation.header.model: evaluation})
    typer.echo(f"results: {out / 'metrics.json'}")


@app.command()
def diagnose(
    model_dir: ModelDir,
    output_dir: Annotated[
        Path | None, typer.Option(help="Where metrics.json goes (default: MODEL_DIR/evaluation).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Change an inference-time setting, e.g. adaptive_k=mass:0.2."),
    ] = None,
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """Measure what the interests do on the test users: collapse, effective number, purity,
    NMI and alignment against categories, coverage, long tail, Diversity@N (and planted-K
    error on synthetic data)."""
    from mirec.config import parse_overrides
    from mirec.models.folder import EVALUATION_DIR
    from mirec.runs import evaluate_folder

    _use_threads(threads)
    out = output_dir or model_dir / EVALUATION_DIR
    evaluation = evaluate_folder(
        model_dir,
        out,
        overrides=parse_overrides(set_ or ()),
        progress=not quiet,
    )
    tables.print_diagnostics(evaluation)
    typer.echo(f"results: {out / 'metrics.json'}")


@app.command(name="compare")
def compare_runs(
    run_a: Annotated[Path, typer.Argument(help="Output directory of `mirec train`: run A.")],
    run_b: Annotated[Path, typer.Argument(help="Another run on the same test users: run B.")],
    by: Annotated[
        str,
        typer.Option(
            help="Bucket the test users by history_length, categories, entropy or "
            "target_popularity."
        ),
    ] = "history_length",
    out: Annotated[
        Path | None,
        typer.Option(help="Write compare.json, metrics.json and compare.png in this folder."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print compare.json, not a table.")] = False,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 0,
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """Compare two trained runs on the same test users, bucket by bucket: each run's
    Recall@50 and NDCG@50 and B - A with a paired bootstrap 95% confidence interval (the
    model folders hold everything needed; no dataset is read)."""
    import json

    from mirec.runs import compare_folders

    _use_threads(threads)
    result, table = compare_folders(
        run_a, run_b, by, out, resamples=resamples, seed=seed, progress=not quiet
    )
    typer.echo(json.dumps(result, indent=2) if json_ else table)
    if out is not None and not json_:
        typer.echo(f"results: {out / 'compare.json'}")


@app.command()
def inspect(
    model_dir: ModelDir,
    user: Annotated[str | None, typer.Option(help="A raw user id of the dataset.")] = None,
    items: Annotated[
        str | None, typer.Option(help="Instead of a user: raw item ids, oldest first, a,b,c.")
    ] = None,
    top: Annotated[int, typer.Option(help="Recommendations per interest and overall.")] = 10,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the history and interests in 2-D (PNG).")
    ] = None,
    threads: Threads = None,
) -> None:
    """Show a user's history grouped by interest, each interest named by its categories,
    with its own recommendations."""
    import json

    from mirec.evaluation.inspection import inspect_folder, plot_interest_map

    if top < 1:
        raise ConfigError(f"--top {top}: must be an integer >= 1")
    item_list = None if items is None else [i.strip() for i in items.split(",") if i.strip()]
    _use_threads(threads)
    report = inspect_folder(model_dir, user=user, items=item_list, top=top)
    typer.echo(json.dumps(report.to_json(), indent=2) if json_ else report.to_text())
    if plot is not None:
        plot_interest_map(report, plot)
        typer.echo(f"plot: {plot}", err=json_)


@app.command()
def recommend(
    model_dir: ModelDir,
    user: Annotated[str | None, typer.Option(help="A raw user id of the training log.")] = None,
    items: Annotated[
        str | None, typer.Option(help="Instead of a user: raw item ids, oldest first, a,b,c.")
    ] = None,
    all_users: Annotated[
        bool,
        typer.Option(
            "--all-users", help="Every user of the folder: write their lists to --out (Parquet)."
        ),
    ] = False,
    users: Annotated[
        Path | None,
        typer.Option(
            "--users",
            help="Write the lists of the users in FILE to --out: a text file of one raw user "
            "id a line, or a Parquet file (its `user` column, or --users-column).",
            readable=False,  # mirec names the file itself
        ),
    ] = None,
    users_column: Annotated[
        str | None, typer.Option(help="The column of a Parquet --users file (default: user).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where --all-users or --users writes the lists: a Parquet file of one row per "
            "(user, rank, item, score, interest), written whole or not at all."
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(min=1, help="--out: users per Parquet row group, what memory holds (4096)."),
    ] = None,
    n: Annotated[int, typer.Option("-n", help="How many items.")] = 10,
    exclude_history: Annotated[
        bool,
        typer.Option(
            help="Leave out the items the user (or --items) already has. Off by default, as "
            "the protocol (docs/protocol.md) scores them; production lists usually want it on."
        ),
    ] = False,
    index: Annotated[
        str | None,
        typer.Option(help="Search the folder's flat, hnsw or ivf index (see `mirec index`)."),
    ] = None,
    quota_alpha: Annotated[
        float | None,
        typer.Option(
            help="The quota merge: each interest gets its share of the list by its share of "
            "the history, sharpened by ALPHA (0: equal shares; docs/interest-share.md)."
        ),
    ] = None,
    quota_half_life: Annotated[
        float | None,
        typer.Option(
            help="With --quota-alpha: the history's shares weigh recent items more, an item's "
            "weight halving every this many positions back (default: the folder's setting)."
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """What should this user see next? The top-n items for a known user's stored history or
    for a list of item ids, each with its score and the interest that found it; with
    --all-users or --users FILE, every such user's list into one Parquet file (--out)."""
    import json

    from mirec.recommender import Recommender

    bulk = all_users or users is not None
    if bulk:
        _check_bulk(all_users, users, user, items, json_, out)
    elif out is not None or users_column is not None or chunk_size is not None:
        raise MirecError("--out, --users-column and --chunk-size go with --all-users or --users")
    elif (user is None) == (items is None):
        raise MirecError("recommend: give either --user or --items (or --all-users)")
    history = [i.strip() for i in (items or "").split(",") if i.strip()]
    if items is not None and not history:
        raise MirecError("--items: no item ids; give raw item ids, oldest first: a,b,c")
    if index is not None:
        _needs("mirec recommend --index", "faiss")
    _use_threads(threads)
    asked = {"quota_alpha": quota_alpha, "quota_half_life": quota_half_life}
    settings = {name: value for name, value in asked.items() if value is not None}
    if bulk:
        from mirec.serving import bulk_lists

        chosen = None if users is None else bulk_lists.read_users(users, users_column)
        rec = Recommender.load(model_dir, **settings)
        chunk = bulk_lists.USERS_PER_CHUNK if chunk_size is None else chunk_size
        written = bulk_lists.write_all_lists(
            rec, out, n=n, users=chosen, exclude_history=exclude_history, index=index,
            chunk_size=chunk, progress=not quiet,
        )  # fmt: skip
        typer.echo(written.summary())
        return
    rec = Recommender.load(model_dir, **settings)
    given = None if user is not None else history  # one of the two: recommend refuses both
    recs = rec.recommend(given, n, user=user, exclude_history=exclude_history, index=index)
    rows = [{"item": r.item, "score": r.score, "interest": r.interest} for r in recs]
    if json_:
        typer.echo(json.dumps({"items": rows, "unknown_items": recs.unknown_items}, indent=2))
        return
    if recs.unknown_items:
        typer.echo(f"unknown items, left out: {', '.join(map(str, recs.unknown_items))}")
    typer.echo(f"{'rank':>4}  {'item':<16}{'score':>10}  interest")
    for i, r in enumerate(recs, 1):
        interest = "popular" if r.interest is None else str(r.interest)
        typer.echo(f"{i:>4}  {r.item!s:<16}{r.score:>10.4f}  {interest}")


def _check_bulk(
    all_users: bool,
    users: Path | None,
    user: str | None,
    items: str | None,
    json_: bool,
    out: Path | None,
) -> None:
    """The options of `mirec recommend --all-users / --users FILE`, checked before any work."""
    if all_users and users is not None:
        raise MirecError("recommend: give --all-users or --users FILE, not both")
    if user is not None or items is not None:
        raise MirecError("recommend: --all-users and --users write many lists; drop --user/--items")
    if json_:
        raise MirecError("--json prints one list; --all-users and --users write Parquet to --out")
    if out is None:
        raise MirecError("--all-users and --users write a Parquet file: give --out FILE")


@app.command()
def index(
    model_dir: ModelDir,
    kind: Annotated[
        str, typer.Option(help="flat (exact inner product), hnsw or ivf (approximate).")
    ],
    m: Annotated[int | None, typer.Option("--m", help="hnsw: links per node (32).")] = None,
    ef_construction: Annotated[
        int | None, typer.Option(help="hnsw: candidate list while building (200).")
    ] = None,
    ef_search: Annotated[
        int | None, typer.Option(help="hnsw: candidate list while searching (128).")
    ] = None,
    nlist: Annotated[
        int | None, typer.Option(help="ivf: k-means lists (about sqrt of the items).")
    ] = None,
    nprobe: Annotated[int | None, typer.Option(help="ivf: lists searched (16).")] = None,
    sample_users: Annotated[
        int, typer.Option(help="Users of the folder whose lists measure the recall.")
    ] = 1000,
    threads: Threads = None,
) -> None:
    """Build an item index for `mirec recommend --index KIND` (and Recommender's
    index=KIND), store it in the model folder, and measure its Recall@50 against the exact
    lists on the folder's own users."""
    import time

    from mirec.recommender import Recommender

    _needs("mirec index", "faiss")
    if sample_users < 1:
        raise ConfigError(f"--sample-users {sample_users}: must be an integer >= 1")
    _use_threads(threads)
    rec = Recommender.load(model_dir)
    start = time.perf_counter()
    built = rec.build_index(
        kind, m=m, ef_construction=ef_construction, ef_search=ef_search, nlist=nlist, nprobe=nprobe
    )
    seconds = time.perf_counter() - start
    from mirec.retrieval.ann import index_paths

    path, _ = index_paths(model_dir, kind)
    options = ", ".join(f"{k}={v}" for k, v in built.options.items()) or "exact"
    typer.echo(f"{kind} index of {built.n_items} items (d={built.d}; {options})")
    typer.echo(f"  built in {seconds:.2f} s, {path.stat().st_size / 2**20:.2f} MiB: {path}")
    info = rec.info
    if info.stored_users != "histories":
        typer.echo(f"  Recall@50 not measured: the folder keeps no histories (stored_users="
                   f"{info.stored_users})")  # fmt: skip
        return
    users = min(sample_users, info.n_users)
    recall = rec.index_recall(kind, n=50, users=users)
    typer.echo(f"  Recall@50 against the exact lists, {users} users of the folder: {recall:.4f}")


@app.command()
def export(
    model_dir: ModelDir,
    out: Annotated[Path, typer.Option(help="Where the export folder goes.")],
    overwrite: Annotated[
        bool, typer.Option(help="Replace --out when it exists and is not empty.")
    ] = False,
) -> None:
    """Export a retrieval model for serving without mirec: item vectors and every known
    user's interests (Parquet), the user tower (ONNX, checked against PyTorch) and
    export.json; the folder is written whole or not at all."""
    from mirec.serving.export import EXPORT_MODULES, MANIFEST_FILE, export_folder

    _needs("mirec export", *EXPORT_MODULES)

    result = export_folder(model_dir, out, overwrite=overwrite)
    m, check = result.manifest, result.manifest["check"]
    typer.echo(
        f"{m['model']} on {m['dataset']}: {m['n_items']} items, {m['n_users']} users, "
        f"{m['n_user_interests']} user interests (K={m['num_interests']}, "
        f"d={m['embedding_dim']}, maxlen={m['maxlen']})"
    )
    typer.echo(
        f"onnx check: max |onnxruntime - pytorch| = {check['max_abs_diff']:.2e} on "
        f"{check['histories']} histories (tolerance {check['tolerance']:g})"
    )
    for name in (*m["files"].values(), MANIFEST_FILE):
        typer.echo(f"  {out / name}")


@app.command()
def serve(
    model_dir: ModelDir,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes, each with the model (default: one per CPU core)."),
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(help="Serve lists from the folder's item index of this kind (mirec index)."),
    ] = None,
) -> None:
    """Serve a model folder over HTTP: POST /recommend, GET /users/{user}/recommendations,
    GET /items/{item}/similar, /model, /health; the API is documented at /docs."""
    _needs("mirec serve", "fastapi", "uvicorn", *(["faiss"] if index else []))
    from mirec.serving.server import serve as run_server  # FastAPI: only for this command

    run_server(model_dir, host=host, port=port, workers=workers, index=index, echo=typer.echo)


@app.command()
def experiment(
    files: Annotated[
        list[Path], typer.Argument(help="Experiment YAML files: datasets x models x seeds.")
    ],
    max_cells: Annotated[
        int | None, typer.Option(help="Run at most this many unfinished cells per file.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Only rewrite the reports from the finished cells.")
    ] = False,
    data_dir: DataDir = None,
    quiet: Quiet = False,
    threads: Threads = None,
    track: Track = None,
    tracking_uri: TrackingUri = None,
    experiment_name: ExperimentName = None,
) -> None:
    """Run grids of training runs (resumable: finished cells are kept) and write their
    reports, one file after another."""
    from mirec.experiments.grid import load_experiment
    from mirec.experiments.report import check_outputs, write_report
    from mirec.experiments.runner import run_experiment
    from mirec.tracking import backend_names, open_tracker

    backends = backend_names(track or (), tracking_uri, experiment_name)
    if max_cells is not None and max_cells < 0:
        raise ConfigError(f"--max-cells {max_cells}: must be an integer >= 0")
    specs = [(file, load_experiment(file)) for file in files]  # every file checked first
    for file, spec in specs:  # and where each writes, before any cell runs
        check_outputs(spec, file)
    # a grid's runs are tracked beside its runs_dir, as a training's beside its output folder
    trackers = [
        open_tracker(() if report_only else backends, spec.runs_dir, tracking_uri, experiment_name)
        for _, spec in specs
    ]
    _use_threads(threads)
    failures = []
    for (file, spec), tracker in zip(specs, trackers, strict=True):
        if not report_only:
            failures += run_experiment(
                spec,
                data_dir=data_dir,
                max_cells=max_cells,
                progress=not quiet,
                echo=typer.echo,
                tracker=tracker,
            )
        done, total = write_report(spec, f"mirec experiment {file}")
        typer.echo(f"report: {spec.report} ({done} of {total} cells finished)")
    if failures:
        for cell, message in failures:
            typer.echo(f"failed: {cell.run_dir}: {message}", err=True)
        raise typer.Exit(1)


@app.command()
def tune(
    model: Annotated[str, typer.Option(help="Published config to tune (see `mirec models`).")],
    output_dir: Annotated[
        Path,
        typer.Option(help="Where the study's database, trials/NNNN, best.yaml and report go."),
    ],
    trials: Annotated[
        int, typer.Option(min=1, help="Finished (complete or pruned) trials the study reaches.")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="As for `mirec train`: a registry name, path or synthetic.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Fix a setting for every trial (it leaves the search): k=v."),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="A YAML file whose search: section is the space (default: the published config's)."
        ),
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="The study's name in the storage (default: the model's).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="An Optuna storage URL (default: sqlite:///OUTPUT_DIR/study.db); workers and "
            "later runs continue the study there."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes running trials side by side on the study.")
    ] = 1,
    startup_trials: Annotated[
        int,
        typer.Option(
            min=0, help="Trials drawn at random, and finished before any is pruned (median rule)."
        ),
    ] = 5,
    worker: Annotated[int | None, typer.Option(hidden=True)] = None,
    data_dir: DataDir = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, help="PyTorch threads of each worker (default: its share of the cores)."
        ),
    ] = None,
) -> None:
    """Search the model's settings with Optuna (TPE, median pruning) on validation
    Recall@50; the study lives in a database, so running the command again continues it."""
    _needs("mirec tune", "optuna", "sklearn")
    from mirec.tuning.study import TuneSpec, check, run_trials

    spec = TuneSpec(
        model=model,
        output_dir=output_dir,
        trials=trials,
        dataset=dataset,
        overrides=tuple(set_ or ()),
        space_file=space,
        study_name=study_name,
        storage=storage,
        workers=workers,
        threads=threads,
        startup_trials=startup_trials,
        data_dir=data_dir,
    )
    if worker is not None:  # one of the processes of --workers: trials only
        check(spec)
        _use_threads(threads)
        run_trials(spec, worker, typer.echo)
        return
    from mirec.tuning.report import REPORT_FILE
    from mirec.tuning.study import tune as run_search

    if workers == 1:
        _use_threads(threads)
    result = run_search(spec, typer.echo)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in result.states.items())
    typer.echo(f"study {result.study_name}: {result.n_trials} trials ({counts})")
    if result.best_trial is not None:
        typer.echo(f"best: trial {result.best_trial}, valid recall@50 {result.best_value:.4f}")
    if result.best_config is not None:
        typer.echo(f"  train it again: mirec train --config {result.best_config} --output-dir DIR")
    typer.echo(f"report: {output_dir / REPORT_FILE}")


@app.command()
def quickstart(
    output_dir: Annotated[
        Path,
        typer.Option(
            help="Where the runs go: OUTPUT_DIR/most-popular and OUTPUT_DIR/comirec-sa, each "
            "replaced when there."
        ),
    ] = Path("runs/quickstart"),
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """Train ComiRec-SA and the MostPopular baseline on the built-in synthetic data."""
    from mirec.runs import train_run

    _use_threads(threads)
    results = {}
    for name, minutes in (("most-popular", None), ("comirec-sa", 1.5)):
        cfg = load_config(name, dataset="synthetic", max_train_minutes=minutes)
        typer.echo(f"training {name} on {cfg.dataset} ...")
        results[name] = train_run(cfg, output_dir / name, progress=not quiet, overwrite=True)
    tables.print_results(results)
    typer.echo(f"results: {output_dir}/*/metrics.json")


@app.command()
def datasets(data_dir: DataDir = None) -> None:
    """List the dataset registry and which datasets are present locally."""
    from mirec.data import locate

    root = locate.data_dir(data_dir)
    typer.echo(f"data directory: {root}")
    for spec, present in locate.status(root):
        mark = "present" if present else "missing"
        typer.echo(f"  {spec.name:<16} {mark:<8} {spec.description}")


@app.command()
def download(
    name: Annotated[str, typer.Argument(help="Registry name, e.g. ml-1m.")],
    data_dir: DataDir = None,
) -> None:
    """Download a public dataset into the data directory and verify its checksum."""
    from mirec.data import locate
    from mirec.data.download import download as fetch

    for path in fetch(name, locate.data_dir(data_dir)):
        typer.echo(f"  {path}")


@app.command()
def models(
    settings: Annotated[
        bool, typer.Option("--settings", help="Print every setting: type, default, what it does.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option(help="With --settings: as the Markdown of docs/settings.md.")
    ] = False,
) -> None:
    """List the published model configurations, and auto (the retrieval default)."""
    if settings:
        from mirec.config_docs import settings_markdown, settings_text

        typer.echo(settings_markdown() if markdown else settings_text(), nl=False)
        return
    typer.echo(
        f"  {AUTO_MODEL:<24} (default) trains {', '.join(AUTO_CANDIDATES)}; keeps the best on "
        "validation Recall@50"
    )
    for name in model_names():
        typer.echo(f"  {name:<24} {model_summary(name)}")


def _needs(purpose: str, *modules: str) -> None:
    """Refuse ``purpose`` in one line, before any work, when an extra it needs is missing."""
    from mirec.core.extras import require

    for module in modules:
        require(module, purpose)


def _use_threads(threads: int | None) -> None:
    """PyTorch's thread count for this command (:mod:`mirec.core.threads`)."""
    from mirec.core.threads import use_threads  # torch: only for the commands that compute

    use_threads(threads)


SECONDARY_GRACE_SECONDS = 3.0
"""How long a torchrun process other than rank 0 waits before it exits on a user error."""
INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""


def main() -> None:
    """Console entry point: user errors, and usage errors (an unknown option, a missing
    one), become one line on stderr and exit code 2."""
    try:
        # not standalone: click's usage errors reach us instead of a boxed message; `mirec`
        # alone shows the help
        code = app(args=sys.argv[1:] or ["--help"], standalone_mode=False)
    except typer.TyperException as err:  # an unknown option, a missing one, a bad value
        context = getattr(err, "ctx", None)
        hint = f"; see `{context.command_path} --help`" if context is not None else ""
        message = _one_line(err.format_message()).rstrip(".")
        _report(f"{message}{hint}")
        sys.exit(err.exit_code)
    except typer.Abort:  # end of input at a prompt
        typer.echo("mirec: interrupted", err=True)
        sys.exit(INTERRUPTED)
    except MirecError as err:
        _report(_one_line(str(err)))
        if launch.is_secondary():
            # rank 0 reports the error after leaving the process group; torchrun's agent
            # stops every process once one has ended, so the others end after it
            import time

            time.sleep(SECONDARY_GRACE_SECONDS)
        sys.exit(err.exit_code)
    except ModuleNotFoundError as err:
        # an optional dependency that a command reached without asking _needs first
        from mirec.core.extras import EXTRA_OF, missing_extra_message

        if (err.name or "").split(".")[0] not in EXTRA_OF:
            raise
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        _report(missing_extra_message(f"mirec {command}".strip(), err.name))
        sys.exit(MirecError.exit_code)
    except OSError as err:
        # the file system refused a path the user gave (permissions, a full disk, a file
        # where a folder belongs): name it, no traceback
        if err.filename is None:
            raise
        _report(_path_problem(err))
        sys.exit(MirecError.exit_code)
    if code == INTERRUPTED:  # typer turns Ctrl-C into this exit code
        typer.echo("mirec: interrupted", err=True)
    # a command's typer.Exit(n), or --help's 0; None when a command returns normally
    sys.exit(code if isinstance(code, int) else 0)


def _path_problem(err: OSError) -> str:
    """One line for an OSError on a path the user gave, saying what is in the way where
    the system's words mislead: a symbolic link to nothing (``mkdir`` says "File exists"),
    a file where a folder of the path belongs ("File exists", "Not a directory")."""
    import errno
    import os

    name = os.fsdecode(err.filename)
    reason = err.strerror or type(err).__name__
    path = Path(name)
    for place in (*reversed(path.parents), path):
        if place.is_symlink() and not place.exists():
            return (
                f"{place}: is a symbolic link to {os.readlink(place)}, which does not exist; "
                "name a folder, or another path"
            )
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        for place in (*reversed(path.parents), path):
            if place.exists() and not place.is_dir():
                where = "" if place == path else f", so {name} cannot be made"
                return f"{place}: is a file, not a folder{where}"
    return f"{name}: {reason}"


def _report(message: str) -> None:
    """An error as one line on stderr. In a torchrun job only rank 0 prints it: every rank
    parses the same arguments, so meets the same usage and setting errors, and the errors a
    rank meets alone reach rank 0 (:mod:`mirec.training.distributed`)."""
    if not launch.is_secondary():
        typer.echo(f"mirec: error: {message}", err=True)


def _one_line(message: str) -> str:
    """A message as one line: any line breaks (from a file's own text) shown as spaces."""
    return " ".join(message.splitlines())
