"""Training objectives: exact and sampled softmax, log-Q correction, REMI hard negatives.

:class:`SampledSoftmax` scores each example's target against a set of negatives and returns
the mean cross-entropy. Three ways to pick the negatives:

* ``"uniform"``: S negatives drawn uniformly, shared by every example of the batch (Jean et
  al., ACL 2015), so the logits are one (B, d) x (d, S) product; ``num_negatives`` 0 (or
  >= N) scores the whole catalogue exactly instead.
* ``"popularity"``: S shared negatives drawn with replacement from the smoothed training
  popularity, with the log-Q correction (Bengio & Senecal, IEEE TNN 2008; Jean et al. 2015).
* ``"in_batch"``: the other examples' targets are the negatives, a B x B logit matrix,
  log-Q corrected by the training popularity (Yi et al., RecSys 2019).

Any of them can be tilted toward the negatives the user scores highly by REMI's
interest-aware hard negative mining (Xie et al., RecSys 2023, section 4.1). A negative that
is the example's own target (an "accidental hit") is masked out of that example's softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mirec.core.functional import log_mean_exp
from mirec.training.fused_softmax import exact_softmax_loss, shared_negatives_loss

FULL_SOFTMAX_MAX_ITEMS = 16384
AUTO_NEGATIVES = 4096
SAMPLINGS = ("uniform", "popularity", "in_batch")
# torch.multinomial refuses more categories than this
_MULTINOMIAL_MAX_CATEGORIES = 2**24


def resolve_negatives(num_negatives: int | None, n_items: int, sampling: str = "uniform") -> int:
    """The number of shared negatives to train with; 0 means the whole catalogue.

    ``None`` (auto) scores the whole catalogue when it has at most 16,384 items, where an
    exact softmax costs little more than a sampled one and trains better (measured on
    amazon-beauty: test Recall@50 0.136 against 0.131 with 4,096 shared negatives and 0.127
    with 1,024), and 4,096 shared uniform negatives beyond that. Popularity sampling always
    samples: auto is 4,096 negatives (at most N - 1). In-batch negatives ignore the count.
    """
    if num_negatives is None:
        if sampling == "popularity":
            return min(AUTO_NEGATIVES, n_items - 1)
        return 0 if n_items <= FULL_SOFTMAX_MAX_ITEMS else AUTO_NEGATIVES
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0 or None, got {num_negatives}")
    return num_negatives


def scores_whole_catalogue(num_negatives: int, n_items: int, sampling: str) -> bool:
    """True when a :class:`SampledSoftmax` of these (resolved) settings is the exact softmax:
    every item is a negative of every example, so every step reads the whole item table."""
    return sampling == "uniform" and (num_negatives == 0 or num_negatives >= n_items)


class SampledSoftmax:
    r"""Mean softmax cross-entropy of each target against exact, sampled or in-batch negatives.

    Notation: ``s_j = <v_u, e_j> / temperature`` is the logit of item j for an example with
    user vector ``v_u`` and target ``+``; N is the catalogue size; V_u is the example's set
    of negatives with accidental hits (negatives equal to its target) removed. Every variant
    computes

        loss_u = -s_+ + log( exp(s_+) + sum_{k in V_u} exp(s_k - rho_k + h_uk) )

    with a log-Q correction ``rho_k`` and a hardness term ``h_uk`` (0 unless
    ``hard_negative_beta > 0``).

    **Sampling and the log-Q correction.** With negatives drawn from q (with replacement),
    ``rho_k = log(N q_k)``, i.e. the log-Q term *relative to the uniform distribution*:

    * uniform (q_k = 1/N): rho_k = 0: exactly the original shared-uniform loss (same draws);
    * popularity: q_k = (c_k + 1) / sum_j (c_j + 1) over items 1..N, from the training
      counts c (add-one smoothing so that an item never seen in training can still be drawn
      and its correction stays finite); the padding row 0 is never drawn;
    * in_batch: the negatives are the other examples' targets, which the data draws from
      (about) the same popularity q, so the same rho_k applies (Yi et al. 2019).

    Nothing is subtracted from the positive logit. The positive is not drawn from q: it is
    in every example's softmax with probability 1, so there is no sampling bias to undo
    (Khrylchenko et al., "Correcting the LogQ Correction", arXiv:2507.09331, 2025, make the
    same point). Why ``log(N q_k)``: E_q[sum_k exp(s_k) / (N q_k)] = (S/N) sum_{j != +}
    exp(s_j) = E_uniform[sum_k exp(s_k)], so popularity sampling estimates, without bias in
    the denominator, the same objective as uniform sampling with the same S, and reduces to
    it exactly when all counts are equal. TensorFlow's ``sampled_softmax_loss`` (and Yi et
    al. on the diagonal) subtract ``log(S q)`` from the positive as well; for non-uniform q
    that shifts the target's logit by ``-log(S q_+)`` (up for rare targets, shrinking their
    gradient), making the objective depend on the target's popularity. Subtracting
    ``log(S q_k)`` from the negatives only (instead of ``log(N q_k)``) would estimate the
    full-softmax denominator; it differs from the form used here by the constant
    ``log(N/S)`` on every negative, and is not used so that "uniform" keeps its original objective.

    **Interest-aware hard negatives** (REMI, Xie et al., RecSys 2023, section 4.1). REMI
    replaces the uniform negative distribution by the ideal one
    ``q_beta(j | u) ∝ exp(beta * s_uj)``, which emphasises the negatives close to the
    selected interest, and estimates the negative term ``S * E_{q_beta}[exp(s_j)]`` by
    self-normalised importance sampling from the negatives actually drawn. Here, with the
    importance ratios ``r_k = exp(-rho_k)`` of the proposal (1 for uniform):

        h_uk = beta * s_k - log E_u,   E_u = sum_{k in V_u} r_k exp(beta s_k) / sum_{k in V_u} r_k

    so the negative term is ``sum_k r_k exp(s_k) * exp(beta s_k) / E_u``: each negative is
    reweighted by ``exp(beta s_k)`` normalised to mean one (E_u is the estimated mean of
    ``exp(beta s)`` under the uniform base distribution). With uniform sampling this is the
    REMI estimate ``S * sum_k softmax_k(beta s) exp(s_k)``; with beta = 0, h = 0 and the loss
    is the plain one exactly. The weights are not detached (the loss is differentiated as
    written, as in the authors' code; unlike that code, accidental hits are masked before
    the weights are normalised). It combines with every sampling: popularity through
    ``r_k``, in_batch over the B - 1 other targets, and the exact softmax over all N - 1
    non-target items (then the expectation over q_beta is exact).

    Args:
        n_items: N, the number of real items (the item table has N + 1 rows, row 0 padding).
        num_negatives: S, the number of shared negatives. For "uniform", 0 or >= N means
            the exact softmax over the whole catalogue. "popularity" needs 1 <= S < N (an
            exact softmax samples nothing, so a popularity sampler there would be silently
            ignored; use "uniform" with 0). "in_batch" ignores it: the batch size sets the
            number of negatives.
        sampling: "uniform", "popularity" or "in_batch".
        item_counts: (N + 1,) training interaction counts, index 0 the padding (ignored);
            required by "popularity" and "in_batch".
        hard_negative_beta: REMI's beta >= 0; 0 turns the reweighting off.
        temperature: logits are dot products divided by this (> 0).
        device: where the sampling distribution starts; it moves to the inputs' device on
            the first call if they differ. A ``generator`` passed to ``__call__`` must be on
            the inputs' device (as ``torch.randint`` and ``torch.multinomial`` require).
        sparse: read the item table's rows through an embedding lookup whose gradient is a
            sparse tensor of those rows, as a sparse optimizer (``RowAdam`` of
            :mod:`mirec.training.optimizer`) needs of every use of the table it trains;
            False indexes the table, whose gradient is dense.
    """

    def __init__(
        self,
        n_items: int,
        num_negatives: int,
        sampling: str = "uniform",
        item_counts: torch.Tensor | None = None,
        hard_negative_beta: float = 0.0,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
        sparse: bool = False,
        fused: bool = True,
    ) -> None:
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
        if sampling not in SAMPLINGS:
            known = ", ".join(repr(s) for s in SAMPLINGS)
            raise ValueError(f"unknown sampling {sampling!r}; known: {known}")
        if not (math.isfinite(hard_negative_beta) and hard_negative_beta >= 0):
            raise ValueError(
                f"hard_negative_beta must be a finite number >= 0, got {hard_negative_beta}"
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if sampling == "popularity":
            if not 1 <= num_negatives < n_items:
                raise ValueError(
                    f"sampling='popularity' needs 1 <= num_negatives < n_items ({n_items}), got "
                    f"{num_negatives}: 0 (or >= n_items) means the exact softmax over the whole "
                    "catalogue, which samples nothing; use sampling='uniform' for it"
                )
            if n_items + 1 > _MULTINOMIAL_MAX_CATEGORIES:
                raise ValueError(
                    f"sampling='popularity' draws with torch.multinomial, which takes at most "
                    f"{_MULTINOMIAL_MAX_CATEGORIES} categories; the catalogue has {n_items} items"
                )
        self.n_items = n_items
        self.num_negatives = num_negatives
        self.sampling = sampling
        self.hard_negative_beta = float(hard_negative_beta)
        self.temperature = float(temperature)
        self.exact = scores_whole_catalogue(num_negatives, n_items, sampling)
        self.sparse = sparse
        # on the CPU, the one-vector losses without hard negatives over a dense table take
        # the forms of mirec.training.fused_softmax (equal to float rounding); False keeps
        # autograd's form everywhere
        self.fused = fused
        self.probabilities: torch.Tensor | None = None
        self.log_correction: torch.Tensor | None = None
        if item_counts is not None or sampling != "uniform":
            counts = _check_counts(item_counts, n_items, sampling)
            smoothed = counts[1:] + 1.0
            probs = torch.zeros(n_items + 1, dtype=torch.float64)
            probs[1:] = smoothed / smoothed.sum()
            correction = torch.zeros(n_items + 1, dtype=torch.float64)
            correction[1:] = torch.log(n_items * probs[1:])
            # q (row 0 zero, so multinomial never draws the padding) and rho = log(N q)
            self.probabilities = probs.to(device=device, dtype=torch.float32)
            self.log_correction = correction.to(device=device, dtype=torch.float32)

    def sample_negatives(
        self, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """(S,) shared negative item indices in 1..N, drawn with replacement on ``device``.

        Uniform draws exactly as the original function did (``torch.randint``), so seeded
        runs reproduce; popularity draws from q with ``torch.multinomial``. ``generator``
        must be on ``device``.
        """
        if self.sampling == "popularity":
            self._move_to(device)
            assert self.probabilities is not None
            return torch.multinomial(
                self.probabilities, self.num_negatives, replacement=True, generator=generator
            )
        if self.sampling != "uniform" or self.exact:
            raise RuntimeError(f"sampling={self.sampling!r} draws no shared negatives here")
        return torch.randint(
            1, self.n_items + 1, (self.num_negatives,), device=device, generator=generator
        )

    def __call__(
        self,
        user: torch.Tensor,
        target: torch.Tensor,
        item_table: torch.Tensor,
        generator: torch.Generator | None = None,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss. ``user``: (B, d); ``target``: (B,) in 1..N; ``item_table``: (N + 1, d).

        ``user`` (B, K, d) trains a mixture of softmaxes (Yang et al., ICLR 2018, "Breaking
        the softmax bottleneck"): each interest k has its own softmax over the same
        candidates (the whole catalogue, or the target and the shared negatives with the
        same log-Q correction and hardness as above), ``log p_k(+)`` its log-probability of
        the target, and the loss is ``-log(mean over the active (B, K) interests of
        p_k(+))`` (``active`` None: all K)."""
        if torch.is_autocast_enabled(user.device.type):
            # under bf16 autocast the logits are still fp32: bf16's 8-bit mantissa rounds
            # scores near 10 by 0.06, coarser than the softmax must tell them apart
            with torch.autocast(user.device.type, enabled=False):
                return self(user.float(), target, item_table.float(), generator, active)
        if user.dim() == 2:
            return self._cross_entropy(user, target, item_table, generator, "mean")
        per_interest = -self._cross_entropy(user, target, item_table, generator, "none")
        return -log_mean_exp(per_interest, active, dim=1).mean()

    def _cross_entropy(
        self,
        user: torch.Tensor,
        target: torch.Tensor,
        item_table: torch.Tensor,
        generator: torch.Generator | None,
        reduction: str,
    ) -> torch.Tensor:
        """The loss of each row of ``user``, (B, d) or (B, K, d), reduced by ``reduction``
        ("mean", or "none": (B,) or (B, K)). The candidates are the example's, shared by its
        K rows; per-example tensors gain a K axis through :func:`_per_example`."""
        tau = self.temperature
        per_example = _per_example(user.dim())
        # the plain one-vector losses on the CPU: their fused forms (training/fused_softmax)
        fused = (
            self.fused
            and self.hard_negative_beta == 0
            and user.device.type == "cpu"
            and user.dim() == 2
            and reduction == "mean"
            and not self.sparse
        )
        if self.sampling == "in_batch":
            in_batch = self._rows(item_table, target)
            scores = self._scaled(user @ in_batch.T)  # (B, [K,] B): column j: example j's target
            positive = scores.diagonal(dim1=0, dim2=-1).movedim(-1, 0)
            # masks the diagonal too: it is the positive, not a negative
            valid = per_example(target.unsqueeze(0) != target.unsqueeze(1))
            self._move_to(user.device)
            assert self.log_correction is not None
            correction = self.log_correction[target]
        elif self.exact:
            if fused:
                return exact_softmax_loss(user, target, item_table, tau)
            scores = self._scaled(user @ self._catalogue(item_table).T)
            labels = per_example(target - 1).expand(scores.shape[:-1])
            if self.hard_negative_beta == 0:
                return _flat_cross_entropy(scores, labels, reduction)
            positive = scores.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            items = torch.arange(1, self.n_items + 1, device=target.device)
            valid = per_example(items.unsqueeze(0) != target.unsqueeze(1))
            correction = None
        else:
            negatives = self.sample_negatives(generator, user.device)
            valid = per_example(negatives.unsqueeze(0) != target.unsqueeze(1))
            correction = None
            if self.sampling == "popularity":
                assert self.log_correction is not None
                correction = self.log_correction[negatives]
            if fused:
                # one gather of the target and negative rows: one gradient for the table
                rows = item_table[torch.cat([target, negatives])]
                positives, shared = rows[: len(target)], rows[len(target) :]
                return shared_negatives_loss(user, positives, shared, valid, correction, tau)
            positive = self._scaled((user * per_example(self._rows(item_table, target))).sum(-1))
            sampled = self._rows(item_table, negatives)
            scores = self._scaled(user @ sampled.T)  # (B, [K,] S), one product for the batch
        return _softmax_loss(
            positive, scores, valid, correction, self.hard_negative_beta, reduction
        )

    def _rows(self, item_table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of the item table, their gradient sparse when :attr:`sparse`."""
        if self.sparse:
            return F.embedding(index, item_table, sparse=True)
        return item_table[index]

    def _catalogue(self, item_table: torch.Tensor) -> torch.Tensor:
        """(N, d): every real item's row (the exact softmax)."""
        if self.sparse:
            every = torch.arange(1, self.n_items + 1, device=item_table.device)
            return F.embedding(every, item_table, sparse=True)
        return item_table[1:]

    def _scaled(self, scores: torch.Tensor) -> torch.Tensor:
        """Dot products -> logits; a temperature of 1 (every published config's) costs no
        pass over them."""
        return scores if self.temperature == 1.0 else scores / self.temperature

    def _move_to(self, device: torch.device | str | None) -> None:
        """Moves the sampling distribution to ``device`` once, not at every call."""
        if self.probabilities is None or device is None:
            return
        if self.probabilities.device != torch.device(device):
            self.probabilities = self.probabilities.to(device)
            self.log_correction = self.log_correction.to(device)  # type: ignore[union-attr]


def _check_counts(item_counts: torch.Tensor | None, n_items: int, sampling: str) -> torch.Tensor:
    if item_counts is None:
        raise ValueError(
            f"sampling={sampling!r} needs item_counts: the ({n_items + 1},) training "
            "interaction counts per item, index 0 the padding"
        )
    counts = torch.as_tensor(item_counts).detach().to("cpu", torch.float64)
    if counts.shape != (n_items + 1,):
        raise ValueError(
            f"item_counts must have shape ({n_items + 1},) (n_items + 1, index 0 the padding), "
            f"got {tuple(counts.shape)}"
        )
    if not (torch.isfinite(counts).all() and (counts >= 0).all()):
        raise ValueError("item_counts must be finite and >= 0")
    return counts


def _per_example(user_dims: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """For (B, K, d) users, gives a per-example (B, ...) tensor the K axis its rows share;
    for (B, d) users, the identity."""
    if user_dims == 2:
        return lambda tensor: tensor
    return lambda tensor: tensor.unsqueeze(1)


def _flat_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy over the last axis of (..., C) ``logits`` against (...) ``labels``."""
    loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction=reduction)
    return loss if reduction != "none" else loss.view(labels.shape)


def _softmax_loss(
    positive: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    correction: torch.Tensor | None,
    beta: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of ``positive`` (...) against ``scores`` (..., C) where ``valid``
    (broadcast to ``scores``), reduced by ``reduction``.

    ``correction`` (C,) is rho = log(N q) per column (None: 0); ``beta`` the REMI tilt. See
    :class:`SampledSoftmax` for the formula.
    """
    negative = scores if correction is None else scores - correction.to(scores.dtype)
    if beta > 0:
        neg_inf = float("-inf")
        tilted = beta * scores if correction is None else beta * scores - correction
        log_sum_tilted = tilted.masked_fill(~valid, neg_inf).logsumexp(-1)
        if correction is None:
            log_sum_ratio = valid.sum(-1).to(scores.dtype).log()
        else:
            log_sum_ratio = (
                (-correction).expand_as(scores).masked_fill(~valid, neg_inf).logsumexp(-1)
            )
        # a row whose negatives are all accidental hits has no mean to take (-inf - -inf);
        # its negatives are masked anyway, so any finite value does
        log_mean = torch.where(valid.any(-1), log_sum_tilted - log_sum_ratio, 0.0)
        negative = negative + beta * scores - log_mean.unsqueeze(-1)
    negative = negative.masked_fill(~valid, float("-inf"))
    logits = torch.cat([positive.unsqueeze(-1), negative], dim=-1)
    return _flat_cross_entropy(logits, torch.zeros_like(positive, dtype=torch.long), reduction)
