"""Sparse-interest extractor: SINE (Tan et al., WSDM 2021, sections 3.2 and 3.3).

A learned pool of L concept prototypes C in R^{L x d} is shared by all users; each user
activates the K concepts that fit the history best and builds one interest per concept.
For a history X in R^{n x d} (positions P steer the attentions):

Concept activation (eq. 1-3)

    a     = softmax_t( tanh((X + P) W_1) W_2 )                  attention over positions
    z_u   = sum_t a_t x_t
    s_u   = C z_u                    in R^L                      score of every concept
    idx   = top-K(s_u)
    C_u   = C[idx] * sigmoid(s_u[idx])     in R^{K x d}          gated activated concepts

Intention assignment (eq. 4), attention weighting (eq. 5), interest embedding (eq. 6)

    P_{k|t} = softmax_k( LayerNorm_1(x_t W_3) . LayerNorm_2(C_u,k) )
    P_{t|k} = softmax_t( tanh((X + P) W_{k,1}) W_{k,2} )         one attention per interest
    phi_k   = LayerNorm_3( sum_t P_{k|t} P_{t|k} x_t )

Intention-aware interest aggregation (eq. 7-9)

    X_hat  = P_{k|t} C_u             in R^{n x d}               each position re-drawn
                                                                 from the user's concepts
    C_apt  = LayerNorm_4( sum_t softmax_t( tanh((X_hat + P) W_5) W_6 )_t x_hat_t )
    e_k    = softmax_k( C_apt . phi_k / tau )

:class:`SparseInterestExtractor` returns ``interests`` = phi (B, K, d), ``weights`` = e
(B, K), ``prototypes`` = the whole pool C (for the concept covariance regularizer, eq. 11,
:mod:`mirec.regularizers.concept_covariance`) and, as ``routing``, the joint weights
P_{k|t} P_{t|k} that build phi_k in eq. 6, each interest's column renormalised to sum to 1
over the real positions (zero on padding; an all-padding row routes nowhere).

Softmaxes over positions see only the real positions, and P_{k|t} is zeroed on padding,
so padding never changes an interest, a weight or the activated concepts. As in the
self-attentive extractor, positions only steer the attentions (eq. 1, 5, 8); the pooled
values and the intention assignment use the plain item embeddings. Positions also steer
the aggregation attention of eq. 8 (the paper leaves this open), since it predicts the
*next* intention and so has to know which position is the most recent.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.core.functional import masked_softmax
from mirec.extractors import EXTRACTORS


@EXTRACTORS.register("sparse_interest")
class SparseInterestExtractor(Extractor):
    """(B, L, d) history embeddings + (B, L) mask -> K interests from a pool of concepts."""

    def __init__(
        self,
        embedding_dim: int,
        num_interests: int,
        maxlen: int,
        num_concepts: int = 500,
        hidden_dim: int | None = None,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= num_interests <= num_concepts:
            raise ValueError(
                f"SINE activates num_interests={num_interests} concepts out of a pool of "
                f"num_concepts={num_concepts}: need 1 <= num_interests <= num_concepts"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.num_interests = num_interests
        self.temperature = temperature
        self.position = nn.Parameter(torch.empty(maxlen, embedding_dim))
        nn.init.normal_(self.position, std=embedding_dim**-0.5)
        self.concepts = nn.Parameter(torch.empty(num_concepts, embedding_dim))  # C, L x d
        nn.init.normal_(self.concepts, std=embedding_dim**-0.5)
        # eq. 1: one attention head that summarises the history for concept activation
        # (no bias on the last layers: a constant shift of softmax logits does nothing)
        self.summary = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1, bias=False)
        )
        # eq. 4 (W_3 has no bias: the layer norm right after would remove most of it)
        self.assign = nn.Linear(embedding_dim, embedding_dim, bias=False)
        self.norm_item = nn.LayerNorm(embedding_dim)
        self.norm_concept = nn.LayerNorm(embedding_dim)
        # eq. 5: K attention heads over positions, one per activated-concept slot
        self.attend = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim),
            nn.Tanh(),
            nn.Linear(hidden_dim, num_interests, bias=False),
        )
        self.norm_interest = nn.LayerNorm(embedding_dim)  # eq. 6
        # eq. 8: the attention that pools the re-drawn sequence into the next intention
        self.intend = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1, bias=False)
        )
        self.norm_intention = nn.LayerNorm(embedding_dim)

    @classmethod
    def from_config(
        cls, config: Config, maxlen: int, profile_dim: int = 0
    ) -> SparseInterestExtractor:
        return cls(
            config.embedding_dim,
            config.num_interests,
            maxlen,
            num_concepts=config.num_concepts,
            hidden_dim=config.hidden_dim,
            temperature=config.intention_temperature,
        )

    def activate(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concept activation (eq. 1-3): the K best concepts' indices into the pool (B, K),
        best first, and their sigmoid-gated prototypes C_u (B, K, d).

        ``history`` must be zero on padding (as :meth:`forward` makes it).
        """
        keep = mask.unsqueeze(-1)
        # positions are aligned to the end: the most recent item always gets P[-1]
        steered = history + self.position[-history.shape[1] :]
        summary = masked_softmax(self.summary(steered), keep, dim=1)  # (B, L, 1)
        scores = (summary * history).sum(1) @ self.concepts.T  # s_u, (B, L_c)
        top, index = scores.topk(self.num_interests, dim=-1)  # (B, K)
        return index, self.concepts[index] * torch.sigmoid(top).unsqueeze(-1)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        keep = mask.unsqueeze(-1)  # (B, L, 1)
        # masked_fill rather than a product: non-finite garbage under the padding stays out
        history = history.masked_fill(~keep, 0.0)
        position = self.position[-history.shape[1] :]  # end-aligned, as in activate()

        _, concepts = self.activate(history, mask)  # C_u, (B, K, d)

        # intention assignment, eq. 4: each position splits itself over the K concepts
        affinity = torch.einsum(
            "bld,bkd->blk", self.norm_item(self.assign(history)), self.norm_concept(concepts)
        )
        p_k_given_t = torch.softmax(affinity, dim=-1) * keep  # (B, L, K), zero on padding
        # attention weighting, eq. 5: each interest's attention over the real positions
        p_t_given_k = masked_softmax(self.attend(history + position), keep, dim=1)
        # interest embedding, eq. 6
        joint = p_k_given_t * p_t_given_k
        interests = self.norm_interest(torch.einsum("blk,bld->bkd", joint, history))
        # routing for the diagnostics: each column sums to 1 over the real positions
        total = joint.sum(1, keepdim=True)
        routing = joint / total.clamp_min(torch.finfo(joint.dtype).tiny)

        # intention-aware aggregation, eq. 7-9
        redrawn = torch.einsum("blk,bkd->bld", p_k_given_t, concepts)  # X_hat, zero on padding
        pooling = masked_softmax(self.intend(redrawn + position), keep, dim=1)  # (B, L, 1)
        intention = self.norm_intention((pooling * redrawn).sum(1))  # C_apt, (B, d)
        logits = torch.einsum("bkd,bd->bk", interests, intention) / self.temperature
        weights = torch.softmax(logits, dim=-1)
        return Extracted(interests, routing, weights=weights, prototypes=self.concepts)
