"""The contracts between mirec's components: what an extractor returns (:class:`Extracted`)
and promises (:class:`Extractor`), what selectors, scorers and the training objective look
like to a model, and what the evaluator needs from a model (:class:`Retriever`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from mirec.core.config import Config


class Extracted(NamedTuple):
    """An extractor's output for a batch of histories.

    ``routing[b, l, k]`` is how much behaviour ``l`` contributes to interest ``k``: the
    attention weights of a self-attentive extractor (each interest's column sums to 1 over
    the history) or the coupling coefficients of capsule routing (each behaviour's row sums
    to 1 over the interests). Padding positions have zero routing. Regularizers and
    diagnostics read it; retrieval only needs ``interests``.
    """

    interests: torch.Tensor
    """(B, K, d)."""
    routing: torch.Tensor | None = None
    """(B, L, K), zero on padding."""
    active: torch.Tensor | None = None
    """(B, K) bool: False for interests a user does not have (dynamic K); None: all active."""
    weights: torch.Tensor | None = None
    """(B, K), rows summing to 1: the extractor's own weighting of the interests into one
    user vector (SINE's intention-aware aggregation); None when it has none."""
    prototypes: torch.Tensor | None = None
    """(C, d): a learned pool of concept prototypes the interests are drawn from (SINE),
    for the regularizers that keep the pool spread; None when there is none."""
    log_partition: torch.Tensor | None = None
    """(B, K): each interest's log-partition over the whole catalogue, in score units:
    ``tau * log sum_i exp(<v_u^k, e_i> / tau)``, so that ``<v_u^k, e_i> - log_partition[k]``
    is ``tau`` times the interest's log-softmax at item i. Set by a model that scores by a
    mixture of softmaxes (:mod:`mirec.aggregators.mixture`), once per batch of users, so that
    any candidate subset can be scored as within the whole catalogue; None otherwise."""


class Extractor(nn.Module):
    """(B, L, d) history embeddings + (B, L) bool mask -> :class:`Extracted`.

    Every extractor meets this contract, and models read these attributes instead of
    probing for them."""

    num_interests: int
    """K, the interests per user (an upper bound when the extractor switches some off)."""
    causal: bool = False
    """True when the interests after position t read positions <= t only, so that
    :meth:`every_position` works (sequence training)."""
    profile_dim: int = 0
    """Width of the (B, profile_dim) user-profile input :meth:`forward` takes (MIND's
    user profiles); 0: it takes none."""
    ctr_only: ClassVar[bool] = False
    """True when the vectors are not interests retrieval can search with (DIN's
    behaviours), so only a CTR model may use the extractor."""
    target_conditioned: ClassVar[bool] = False
    """True when training shows the extractor each example's target: a diffusion extractor
    learns to denoise a noised copy of the target's embedding (DiffuRec), so a retrieval
    model trains it through :meth:`denoise_target`, and :meth:`forward` (inference) starts
    from noise instead."""

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> Extractor:
        """The extractor ``config`` describes, for histories of ``maxlen``; ``profile_dim``
        is the width of the user profiles when the config uses them."""
        raise NotImplementedError

    def forward(
        self, history: torch.Tensor, mask: torch.Tensor, profile: torch.Tensor | None = None
    ) -> Extracted:
        """``profile`` (B, profile_dim) is given exactly when :attr:`profile_dim` > 0."""
        raise NotImplementedError

    def every_position(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, Extracted]:
        """Sequence training: the interests after every prefix, (B, L, K, d), and the last
        position's :class:`Extracted` (what :meth:`forward` returns). Causal extractors
        only (:attr:`causal`)."""
        raise ValueError(f"{type(self).__name__} is not causal: it has no every_position")

    def denoise_target(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Extracted:
        """Training pass of a :attr:`target_conditioned` extractor: the interests it makes
        from the history and a noised copy of ``target`` (B, d), each example's next-item
        embedding; the noise is drawn from ``generator`` (the global one when None)."""
        raise ValueError(
            f"{type(self).__name__} is not target-conditioned: it has no denoise_target"
        )

    def denoise_every_position(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Extracted]:
        """Sequence training of a :attr:`target_conditioned` :attr:`causal` extractor: the
        interests at every position from a noised copy of its next item, ``targets``
        (B, L, d), (B, L, K, d); and the last position's :class:`Extracted`."""
        raise ValueError(
            f"{type(self).__name__} is not target-conditioned: it has no denoise_every_position"
        )


Selector = Callable[..., torch.Tensor]
"""Training-time interest selection: (interests (B, K, d), target embeddings (B, d),
active (B, K) | None) -> (B, d) the user vector the example trains."""
Scorer = Callable[..., torch.Tensor]
"""Score-level aggregation: (interests (B, K, d), items (N, d), active (B, K) | None) ->
(B, N) scores."""


class Objective(Protocol):
    """The training softmax as a model sees it (:class:`~mirec.training.sampled_softmax.
    SampledSoftmax`): the mean loss of a batch of user vectors against their targets."""

    def __call__(
        self,
        user: torch.Tensor,
        target: torch.Tensor,
        item_table: torch.Tensor,
        generator: torch.Generator | None = None,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``user`` (B, d), ``target`` (B,) in 1..N, ``item_table`` (N + 1, d) -> scalar.

        ``user`` (B, K, d) is a mixture of softmaxes: each interest's softmax over the same
        candidates, mixed with uniform weights over the ``active`` (B, K) interests (None:
        all), and the loss is ``-log`` of the mixture's probability of the target."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """What the evaluator needs from a model to rank the whole catalogue for each user."""

    num_interests: int
    uses_user_rows: bool
    """True when :meth:`extract` needs the users' rows (MIND with user profiles)."""
    scorer: Scorer | None
    """How :meth:`score` merges the interests' scores (the max over interests, a mixture,
    ...), which ranking and item indexes follow; None for a model that scores items itself
    without interests (the popularity baseline)."""
    training: bool
    """Whether the model is in training mode (``torch.nn.Module.training``)."""

    def extract(self, histories: torch.Tensor, users: torch.Tensor | None = None) -> Extracted:
        """(B, L) padded item indices (and (B,) user rows) -> interests, active flags."""
        ...

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d): row j is item index j + 1."""
        ...

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        """The vectors that search the catalogue: the interests, or one fused vector."""
        ...

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores: the model's aggregation of its interests."""
        ...
