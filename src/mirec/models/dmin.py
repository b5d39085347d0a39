"""DMIN: Deep Multi-Interest Network for CTR prediction (Xiao et al., CIKM 2020).

Read top to bottom:

1. Behaviour refiner (section 3.2): multi-head self-attention over the history embeddings
   E (B, L, d), with a residual connection and LayerNorm, gives refined behaviours Z. An
   auxiliary loss (eq. 4) asks each refined behaviour z_t to tell the next clicked item
   e_{t+1} from a random item: ``-log s(z_t . e_{t+1}) - log(1 - s(z_t . e_neg))``,
   averaged over the real positions t < L - 1 of the batch.
2. Multi-interest extractor (section 3.3): K more self-attention heads over Z, each
   ``head_k = softmax(Z W_q^k (Z W_k^k)^T / sqrt(d_h)) Z W_v^k`` (B, L, d_h) with the usual
   multi-head width d_h = d / K; head k is interest k's view of the history.
3. For each head, DIN's target attention (:class:`TargetAttention`, one unit per head)
   with the candidate, projected to the head's width, pools the head's states plus
   learned position embeddings (as in the paper) into interest k.
4. The K interests, concatenated with the candidate embedding, go through an MLP to one
   logit (the paper's concat; user-profile and context features are absent here).

The loss (:class:`ClickModel`) is binary cross-entropy + ``aux_weight`` x the auxiliary
loss.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.aggregators.target_attention import TargetAttention
from mirec.core.functional import masked_softmax
from mirec.core.layers import prelu_mlp
from mirec.errors import ConfigError
from mirec.models.ctr_model import HEAD_SIZES, ClickModel, ItemEncoder

REFINER_HEADS = 4
"""The heads of DMIN's behaviour refiner: the embedding width must divide by them."""


class DMIN(ClickModel):
    def __init__(
        self,
        encoder: ItemEncoder,
        embedding_dim: int,
        num_interests: int,
        maxlen: int,
        refiner_heads: int = REFINER_HEADS,
        dropout: float = 0.1,
        aux_weight: float = 1.0,
    ) -> None:
        super().__init__()
        d = embedding_dim
        if d % num_interests:
            raise ConfigError(
                f"DMIN splits embedding_dim={d} over num_interests={num_interests} heads: "
                "the dimension must be a multiple of K"
            )
        self.head_dim = d // num_interests
        self.encoder = encoder
        self.num_interests = num_interests
        self.aux_weight = aux_weight
        self.refiner = nn.MultiheadAttention(d, refiner_heads, dropout=dropout, batch_first=True)
        self.refiner_norm = nn.LayerNorm(d)
        # all K extractor heads at once: one projection each for queries, keys and values
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.candidate = nn.Linear(d, d, bias=False)  # the candidate, in each head's width
        self.position = nn.Parameter(torch.empty(maxlen, self.head_dim))
        nn.init.normal_(self.position, std=self.head_dim**-0.5)
        self.target_attention = nn.ModuleList(
            TargetAttention(self.head_dim) for _ in range(num_interests)
        )
        self.mlp = prelu_mlp(2 * d, HEAD_SIZES)

    def _refine(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # a row of padding only would make every attention weight NaN: let it see itself
        keep = mask.clone()
        keep[:, -1] = True
        refined, _ = self.refiner(history, history, history, key_padding_mask=~keep)
        return self.refiner_norm(history + refined) * mask.unsqueeze(-1)

    def _heads(self, refined: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, d) refined behaviours -> (B, K, L, d_h) the K heads' views."""
        b, length, _ = refined.shape
        shape = (b, length, 3, self.num_interests, self.head_dim)
        q, k, v = self.qkv(refined).view(shape).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, K, L, d_h)
        logits = q @ k.transpose(-1, -2) / self.head_dim**0.5
        attention = masked_softmax(logits, mask[:, None, None, :], dim=-1)
        return (attention @ v) * mask[:, None, :, None]

    def _forward(
        self, histories: torch.Tensor, candidates: torch.Tensor, behaviors: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple]:
        mask = histories > 0
        history = self.encoder(histories, behaviors)
        refined = self._refine(history, mask)
        heads = self._heads(refined, mask) + self.position[-histories.shape[1] :]
        candidate = self.encoder(candidates)
        per_head = self.candidate(candidate).view(-1, self.num_interests, self.head_dim)
        interests = [
            unit(heads[:, k], per_head[:, k], mask) for k, unit in enumerate(self.target_attention)
        ]
        logits = self.mlp(torch.cat([*interests, candidate], -1)).squeeze(-1)
        return logits, (refined, history, mask)

    def penalty(self, state: tuple, generator: torch.Generator | None) -> torch.Tensor:
        refined, history, mask = state
        if self.aux_weight == 0:
            return refined.new_zeros(())
        return self.aux_weight * self._auxiliary(refined, history, mask, generator)

    def _auxiliary(
        self,
        refined: torch.Tensor,
        history: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Eq. 4: z_t against the next behaviour e_{t+1} and a uniformly drawn item."""
        pairs = mask[:, :-1] & mask[:, 1:]
        if not pairs.any():
            return refined.new_zeros(())
        z, nxt = refined[:, :-1][pairs], history[:, 1:][pairs]
        n_items = self.encoder.item.num_embeddings - 1
        random_items = torch.randint(
            1, n_items + 1, (len(z),), device=z.device, generator=generator
        )
        negative = self.encoder(random_items)
        positive_logit, negative_logit = (z * nxt).sum(-1), (z * negative).sum(-1)
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(positive_logit, torch.ones_like(positive_logit)) + bce(
            negative_logit, torch.zeros_like(negative_logit)
        )
