"""The published models and how a run's settings are loaded: the catalogue of configs
shipped in ``mirec/configs`` (and the retrieval default ``auto``, several of them), YAML
files and ``--set key=value`` overrides, each over the last, into one
:class:`~mirec.core.config.Config`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mirec.core.config import ARCHITECTURE_SETTINGS, Config, config_from_dict
from mirec.core.layout import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE
from mirec.errors import ConfigError

CTR_DEFAULT_MODEL = "comirec-sa"
"""The model of ``--task ctr`` without ``--model``: ComiRec-SA's interests under DIN's head,
max-aggregated, the best or within a seed's spread of the best in docs/ctr.md."""

AUTO_MODEL = "auto"
"""The model of retrieval without ``--model``: every config of :data:`AUTO_CANDIDATES`
trains, and the best on validation Recall@50 is the run's model (:mod:`mirec.auto`)."""
AUTO_CANDIDATES = ("sasrec", "comirec-sa-transformer", "remi-plain")
"""The candidates of ``auto``, ties going to the earlier one: SASRec, the single-interest
model no published multi-interest config beats everywhere (docs/results.md: ml-100k), then
the leaders of docs/results.md (comirec-sa-transformer on ml-100k, remi-plain on the
Amazon sets). docs/default.md measures the choice on six datasets."""
AUTO_CANDIDATES_DIR = "candidates"
"""The folder inside an ``auto`` run's output folder where each candidate trains."""
SELECTION_METRIC = "recall@50"
"""What ``auto``'s candidates are ranked by: validation Recall@50, as early stopping is."""
SEARCH_SECTION = "search"
"""The section of a config file that is no setting: the search space of ``mirec tune``
(parsed by :mod:`mirec.tuning.space`). Loading settings leaves it out, so a published
config, or a file given to ``--config``, may carry one."""


@dataclass(frozen=True)
class TrainingPlan:
    """What one ``mirec train`` trains: one published config, or for :data:`AUTO_MODEL`
    its candidates and the rule that keeps one of them (:mod:`mirec.auto`)."""

    candidates: tuple[Config, ...]
    selected_on: str | None = None
    """None: the one candidate is the run; else the validation metric on which the best
    candidate becomes the run's model (:data:`SELECTION_METRIC`)."""

    @property
    def name(self) -> str:
        """The model asked for: :data:`AUTO_MODEL` or the one config's."""
        return self.candidates[0].model if self.selected_on is None else AUTO_MODEL

    def folders(self, output_dir: Path) -> list[tuple[Config, Path]]:
        """Each candidate with the folder it trains in: ``output_dir`` itself for one model,
        ``output_dir/candidates/NAME`` for each of auto's."""
        if self.selected_on is None:
            return [(self.candidates[0], output_dir)]
        return [(c, output_dir / AUTO_CANDIDATES_DIR / c.model) for c in self.candidates]


def model_names() -> list[str]:
    """The published configurations shipped in ``mirec/configs``."""
    folder = resources.files("mirec.configs")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def model_summary(name: str) -> str:
    """The first comment line of a published config, for ``mirec models``."""
    text = resources.files("mirec.configs").joinpath(f"{name}.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    return first.lstrip("# ").strip()


def load_plan(
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
    **settings: Any,
) -> TrainingPlan:
    """What a training run of ``model`` trains: one config (:func:`load_config`), or for
    :data:`AUTO_MODEL` (the retrieval default) one per :data:`AUTO_CANDIDATES`, each with
    the same files, settings and overrides, kept on :data:`SELECTION_METRIC`."""
    values = {} if config_file is None else _read_yaml(config_file)
    if _init_from(values, overrides, fixed, settings) is not None:  # the folder's one model
        return TrainingPlan((load_config(model, config_file, overrides, fixed, **settings),))
    name = _model_name(model, values, overrides, settings)
    if name != AUTO_MODEL:
        return TrainingPlan((load_config(name, config_file, overrides, fixed, **settings),))
    candidates = tuple(
        load_config(candidate, config_file, overrides, fixed, **settings)
        for candidate in AUTO_CANDIDATES
    )
    return TrainingPlan(candidates, selected_on=SELECTION_METRIC)


def load_config(
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    fixed: dict[str, Any] | None = None,
    **settings: Any,
) -> Config:
    """Published config ``model`` (else the config file's, else :data:`CTR_DEFAULT_MODEL`
    for the CTR task), then ``config_file``, then ``settings`` (non-None keyword values),
    then ``fixed`` (None included: it unsets a setting), then ``--set key=value``
    overrides, each over the last. :data:`AUTO_MODEL` (the retrieval default) is several
    configs: :func:`load_plan`."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_yaml(config_file))
    init_from = _init_from(values, overrides, fixed, settings)
    if init_from is not None:
        base, name = _folder_settings(init_from, model)
    else:
        name = _model_name(model, values, overrides, settings)
        base = None
    if name == AUTO_MODEL:
        raise ConfigError(
            f"model {AUTO_MODEL} trains {len(AUTO_CANDIDATES)} candidates "
            f"({', '.join(AUTO_CANDIDATES)}) and keeps the best on validation; name one model "
            "here"
        )
    merged = _read_published(name) if base is None else dict(base)
    merged.update(values)
    merged["model"] = name
    merged.update({k: v for k, v in settings.items() if v is not None})
    merged.update(fixed or {})
    merged.update(parse_overrides(overrides))
    if merged.get("model") != name:
        # `--set model=gru4rec` relabelled a comirec-sa run as gru4rec: its architecture is
        # the published config's, so its name is too
        raise ConfigError(
            f"setting model={merged.get('model')!r}: the model is the published config this "
            f"run starts from ({name}), which --model (model= in Python) names; to train "
            f"{merged.get('model')}, give --model {merged.get('model')}"
        )
    if base is not None:
        _keep_architecture(merged, base, init_from)
    config = config_from_dict(merged, source=str(config_file or f"model {name}"))
    if init_from is not None and config.init_optimizer == "carry":
        require_optimizer_state(init_from)  # before any data is read
    return config


def require_optimizer_state(folder: Path) -> None:
    """A ConfigError unless model folder ``folder`` keeps its optimizer's state, which
    ``init_optimizer=carry`` starts from."""
    if not (folder / OPTIMIZER_FILE).is_file():
        raise ConfigError(
            f"setting init_optimizer=carry: --init-from {folder} keeps no optimizer state (no "
            f"{OPTIMIZER_FILE}; a run trained with keep_optimizer_state=true keeps it): "
            "fine-tune with init_optimizer=fresh"
        )


def _keep_architecture(merged: dict[str, Any], base: dict[str, Any], folder: Path) -> None:
    """A ConfigError, before anything is read or trained, when a setting given to a run
    that fine-tunes ``folder`` would change the architecture its weights were trained in."""
    for name in ARCHITECTURE_SETTINGS:
        if name in base and merged.get(name) != base[name]:
            raise ConfigError(
                f"setting {name}={merged.get(name)!r}: --init-from {folder} holds a model with "
                f"{name}={base[name]!r}, and its weights follow it; leave the setting out to "
                "fine-tune the folder's model, or train from scratch"
            )


def _model_name(
    model: str | None,
    file_values: dict[str, Any],
    overrides: list[str] | tuple[str, ...],
    settings: dict[str, Any],
) -> str:
    """The model asked for (else the config file's, else the task's default), checked."""
    task = parse_overrides(overrides).get("task") or settings.get("task") or file_values.get("task")
    default = CTR_DEFAULT_MODEL if task == "ctr" else AUTO_MODEL
    name = model or file_values.get("model") or default
    if name == AUTO_MODEL and task == "ctr":  # another bad task is the task's own error
        raise ConfigError(
            f"model {AUTO_MODEL}: picks among retrieval models; task={task} takes one model "
            f"(default {CTR_DEFAULT_MODEL})"
        )
    if name != AUTO_MODEL and name not in model_names():
        known = ", ".join([*model_names(), AUTO_MODEL])
        raise ConfigError(f"unknown model {name!r}; known models: {known}")
    return name


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["key=value", ...]`` -> {key: value}, values read as YAML; an empty value is None."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if not key.strip():
            raise ConfigError(f"--set {item!r}: no setting before '='; expected key=value")
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
        if key in out and out[key] != value:
            # the last one won silently, as a repeated key in YAML would (refused there too)
            raise ConfigError(
                f"--set {key}: given twice, {given[key]!r} and {item!r}; give it once"
            )
        out[key], given[key] = value, item
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain
    YAML keeps the last, so a repeated setting would change a result without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # the base class refuses it with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _init_from(
    file_values: dict[str, Any],
    overrides: list[str] | tuple[str, ...],
    fixed: dict[str, Any] | None,
    settings: dict[str, Any],
) -> Path | None:
    """The model folder the run fine-tunes (``init_from``), from the last layer that sets it;
    None also for a value that is no folder name (empty, not text), which the schema then
    refuses as a setting."""
    for layer in (parse_overrides(overrides), fixed or {}, settings, file_values):
        value = layer.get("init_from")
        if value is not None:
            return Path(value) if isinstance(value, str) and value.strip() else None
    return None


def _folder_settings(folder: Path, model: str | None) -> tuple[dict[str, Any], str]:
    """The settings of the model folder ``folder`` (its ``config.yaml``, with the ``maxlen``
    its weights were built for), and its model: the base of a run that fine-tunes it. The
    folder's files themselves are checked when its weights are read (mirec.models.folder)."""
    if not (folder / CONFIG_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise ConfigError(
            f"--init-from {folder}: not a model folder (no {CONFIG_FILE} or {MODEL_FILE}); "
            "give the output folder of `mirec train`"
        )
    base = _read_yaml(folder / CONFIG_FILE)
    try:
        maxlen = json.loads((folder / MODEL_FILE).read_text())["maxlen"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{folder / MODEL_FILE}: not a readable model.json ({err})") from None
    name = base.get("model")
    if not isinstance(name, str):
        raise ConfigError(f"{folder / CONFIG_FILE}: records no model")
    if base.get("extractor") == "popularity":
        raise ConfigError(
            f"--init-from {folder}: a {name} model learns no weights to start from (it counts "
            "the log); train it on the new log as it is"
        )
    if model is not None and model != name:
        raise ConfigError(
            f"--init-from {folder}: holds a {name} model; --model {model} is another "
            "architecture: leave --model out to fine-tune it, or train from scratch"
        )
    # the weights' shapes follow maxlen (positions): the folder's, not the new log's default
    return {**base, "maxlen": maxlen}, name


def load_yaml(text: str) -> Any:
    """``text`` as YAML, refusing a key repeated within a mapping (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line N: not valid YAML (what is wrong)``."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark else "parse error"
    return f"{where}: not valid YAML ({getattr(err, 'problem', None) or type(err).__name__})"


def published_yaml(name: str) -> dict[str, Any]:
    """Published config ``name``'s file as it is, its :data:`SEARCH_SECTION` included."""
    text = resources.files("mirec.configs").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _read_published(name: str) -> dict[str, Any]:
    values = published_yaml(name)
    values.pop(SEARCH_SECTION, None)
    return values


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml_mapping(path)
    data.pop(SEARCH_SECTION, None)
    return data


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping at the top of YAML file ``path`` (empty for an empty file); a ConfigError
    naming the file when it is missing, not YAML, or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {yaml_problem(err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data
