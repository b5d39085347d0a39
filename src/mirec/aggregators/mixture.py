"""Mixture of softmaxes over a user's interests (Yang et al., ICLR 2018, "Breaking the
softmax bottleneck", section 3: MoS).

    p(i | u) = (1 / K_u) sum_k softmax_i(<v_u^k, e_i> / tau)

over the user's K_u active interests, with uniform weights (a learned gate measured no
better in the prototype on ml-100k). Training minimises ``-log p(target | u)``
(:class:`~mirec.training.sampled_softmax.SampledSoftmax` given (B, K, d) users); retrieval
ranks by ``log p(i | u)``:

    score(u, i) = log mean_k exp(<v_u^k, e_i> / tau - log Z_k),
    log Z_k = log sum_{j in catalogue} exp(<v_u^k, e_j> / tau).

Unlike the max, an interest's scores only count relative to its own partition: an
interest that spreads its mass over many items cannot outbid a focused one by its norm.
``log Z_k`` needs the whole catalogue, so a model that scores this way stores it in
:attr:`~mirec.core.contracts.Extracted.log_partition` (in score units, ``tau log Z_k``)
once per batch of users, and any candidate subset (an ANN search's union, a chunk) is then
scored exactly as within the catalogue. The score is increasing in each interest's own
score, but the union of every interest's top-n need not hold the mixture's top-n (an item
all interests like moderately can beat the items one interest prefers): an item index,
which returns each interest's top-n, cannot serve it (:mod:`mirec.retrieval.ann`
refuses it), and the diversity merge adds the mixture's own top-n to its candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mirec.aggregators import AGGREGATORS, RETRIEVAL, Level
from mirec.aggregators.max_score import per_interest_scores
from mirec.core.chunked_top import chunks
from mirec.core.config import Config
from mirec.core.functional import log_mean_exp


@dataclass(frozen=True)
class MixtureOfSoftmaxes:
    """The ``mixture`` scorer: ``(interests, items, active, log_partition) -> (B, N)``
    log-probabilities of the items under the mixture; ``temperature`` is the training
    softmax's (``Config.temperature``)."""

    temperature: float = 1.0
    level = Level.SCORE
    tasks = (RETRIEVAL,)

    @classmethod
    def from_config(cls, config: Config) -> MixtureOfSoftmaxes:
        return cls(config.temperature)

    def log_partition(self, interests: torch.Tensor, catalogue: torch.Tensor) -> torch.Tensor:
        """(B, K, d) interests, (N, d) the whole catalogue -> (B, K) ``tau log Z_k``, the
        catalogue's chunks (:mod:`mirec.core.chunked_top`) summed one at a time."""
        interests = interests.to(catalogue.dtype)
        parts = [
            (per_interest_scores(interests, catalogue[lo:hi]) / self.temperature).logsumexp(-1)
            for lo, hi in chunks(catalogue.shape[0])
        ]
        total = parts[0] if len(parts) == 1 else torch.stack(parts, -1).logsumexp(-1)
        return self.temperature * total

    def __call__(
        self,
        interests: torch.Tensor,
        items: torch.Tensor,
        active: torch.Tensor | None = None,
        log_partition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K, d) interests x ``items`` (N, d) -> (B, N) ``log p(i | u)``. Without
        ``log_partition`` (B, K) the items must be the whole catalogue."""
        scores = per_interest_scores(interests.to(items.dtype), items)
        if log_partition is None:
            log_partition = self.temperature * (scores / self.temperature).logsumexp(-1)
        return mixture_of_interest_scores(scores, log_partition, active, self.temperature)


def mixture_of_interest_scores(
    scores: torch.Tensor,
    log_partition: torch.Tensor,
    active: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """(B, K, N) dot products ``<v_u^k, e_i>``, (B, K) ``tau log Z_k`` -> (B, N) the
    mixture's log-probabilities, uniform over the ``active`` (B, K) interests."""
    log_probs = (scores - log_partition.unsqueeze(-1).to(scores.dtype)) / temperature
    mask = None if active is None else active.unsqueeze(-1)
    return log_mean_exp(log_probs, mask, dim=1)


AGGREGATORS.register("mixture")(MixtureOfSoftmaxes)
