"""The optimizer of a training run: dense Adam over every weight, or, on a large catalogue,
a row-wise Adam for the item table and Adam for the rest, so that a step costs the item
rows the batch touches rather than the whole table.

Dense Adam updates every row of the item table at every step (a zero gradient still moves
the moments and, through them, the weights), so a step costs O(catalogue x d) whatever the
batch. With ``nn.Embedding(sparse=True)`` the table's gradient holds only the rows looked
up, and :class:`RowAdam` updates those rows alone ("lazy" Adam: a row's moments decay only
on the steps that touch it). Its first step is dense Adam's (the untouched rows' update is
zero in both), and so is every step on rows that every step touches; the others differ.

``sparse_items`` (``Config``) chooses: true, false, or auto, which is true from
:data:`SPARSE_ITEMS_MIN_CATALOGUE` items up, where sparse measured faster
(``benchmarks/catalogue_speed.py``), unless the loss scores the whole catalogue (every row
has a gradient at every step) or ``weight_decay`` is set (RowAdam has none).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mirec.core.config import Config
from mirec.errors import ConfigError
from mirec.training.sampled_softmax import resolve_negatives, scores_whole_catalogue

SPARSE_ITEMS_MIN_CATALOGUE = 32768
"""auto's threshold: the catalogue size from which sparse gradients measured faster than
dense Adam for the ``comirec-sa`` and ``mind`` configs (benchmarks/README.md)."""


class JointOptimizer:
    """Optimizers over disjoint parameters, stepped as one. It offers what the epoch loop
    and the checkpoint use of an optimizer: ``zero_grad``, ``step``, and a state dict in
    torch's layout whose parameter indices run on from one optimizer to the next, so a
    checkpoint stores it as it stores a single optimizer's."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for part in self.parts:
            own = part.state_dict()
            state.update({offset + index: value for index, value in own["state"].items()})
            for group in own["param_groups"]:
                groups.append({**group, "params": [offset + i for i in group["params"]]})
            offset += _n_params(part)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = iter(state_dict["param_groups"])
        offset = 0
        for part in self.parts:
            n = _n_params(part)
            own_groups = [next(groups) for _ in part.param_groups]
            part.load_state_dict(
                {
                    "state": {
                        index - offset: value
                        for index, value in state_dict["state"].items()
                        if offset <= index < offset + n
                    },
                    "param_groups": [
                        {**group, "params": [i - offset for i in group["params"]]}
                        for group in own_groups
                    ],
                }
            )
            offset += n


class RowAdam(torch.optim.Optimizer):
    """Adam for weights whose gradients are sparse rows (``nn.Embedding(sparse=True)``):
    a step updates the rows its gradient holds, by ``torch.optim.Adam``'s formula (eps added
    after the bias correction, as there), and leaves every other row and its moments as they
    are. The bias correction counts the steps of the whole table, as SparseAdam's does.

    ``torch.optim.SparseAdam`` updates the same rows, but adds eps before the bias correction
    (eps / sqrt(1 - beta2^t) in Adam's terms: 32 x eps at the first step), which moves rows
    with gradients near 1e-7 differently from Adam; and it measured about half as fast on
    2M x 64 tables, its masks and sparse additions costing more than row gathers and
    scatters (benchmarks/README.md)."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                if not weight.grad.is_sparse:
                    raise RuntimeError(
                        "RowAdam takes sparse gradients (an embedding with sparse=True): "
                        "every use of the table must be a sparse lookup"
                    )
                grad = weight.grad.coalesce()  # one row per index, duplicates summed
                rows, values = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                state = self.state[weight]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(weight)
                    state["exp_avg_sq"] = torch.zeros_like(weight)
                state["step"] += 1
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                exp_avg_sq.mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denom = exp_avg_sq.sqrt_().div_(math.sqrt(bias_correction2)).add_(group["eps"])
                step_size = group["lr"] / bias_correction1
                # index_add_ with alpha takes a slower path than scaling the (rows, d) update first
                weight.index_add_(0, rows, exp_avg.div_(denom).mul_(-step_size))


Optimizer = torch.optim.Optimizer | JointOptimizer


def optimizer_parameters(optimizer: Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters, in the order of its state dict's indices."""
    parts = optimizer.parts if isinstance(optimizer, JointOptimizer) else (optimizer,)
    return [p for part in parts for group in part.param_groups for p in group["params"]]


def _n_params(optimizer: torch.optim.Optimizer) -> int:
    return sum(len(group["params"]) for group in optimizer.param_groups)


def sparse_item_gradients(config: Config, n_items: int, *, nccl: bool = False) -> bool:
    """Whether the item table of a run on ``n_items`` items trains with sparse gradients:
    ``config.sparse_items``, with auto resolved as the module docstring says. ``nccl``: the
    run is a torchrun job on CUDA, whose NCCL all-reduce takes no sparse gradient, so auto
    is dense there and true is refused (gloo, on CPU, takes them)."""
    if nccl and config.sparse_items is True:
        raise ConfigError(
            "setting sparse_items=true: NCCL (torchrun on CUDA) cannot all-reduce sparse "
            "gradients; use sparse_items=false or auto"
        )
    if isinstance(config.sparse_items, bool):
        return config.sparse_items
    if nccl:
        return False
    if n_items < SPARSE_ITEMS_MIN_CATALOGUE or config.weight_decay > 0:
        return False
    if config.task != "retrieval":  # CTR: a step reads the batch's items and its negatives
        return True
    sampling = config.negative_sampling
    negatives = resolve_negatives(config.num_negatives, n_items, sampling)
    return not scores_whole_catalogue(negatives, n_items, sampling)


def build_optimizer(model: nn.Module, config: Config, sparse_items: bool) -> Optimizer:
    """Adam over ``model``'s weights; with ``sparse_items``, the model's item table
    (``model.item_table``) is switched to sparse gradients and trained by :class:`RowAdam`,
    the rest by Adam, both at ``config.lr``."""
    if not sparse_items:
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    table: nn.Embedding = model.item_table  # type: ignore[assignment]
    table.sparse = True
    rest = [p for p in model.parameters() if p is not table.weight]
    return JointOptimizer(
        torch.optim.Adam(rest, lr=config.lr, weight_decay=config.weight_decay),
        RowAdam([table.weight], lr=config.lr),
    )
