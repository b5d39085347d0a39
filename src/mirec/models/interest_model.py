"""The retrieval model: an item table, an extractor, and how the interests meet the items.

    interests = extractor(E[history], history > 0)      (B, K, d)
    v_u       = select(interests, E[target])            (B, d)   score-level aggregation
              | fuse(interests)                                  representation aggregation
              | interests                               (B, K, d) mixture of softmaxes
    loss      = sampled softmax of <v_u, e_target> against the objective's negatives
                (the mixture: -log of the mean over interests of each one's softmax)
                + sum of weight * penalty over the configured regularizers

At serving time a score-level model keeps all K interests and scores items by their max
(:mod:`mirec.aggregators.max_score`), mean or mixture of softmaxes
(:mod:`mirec.aggregators.mixture`, whose per-interest log-partitions over the catalogue
:meth:`InterestModel.extract` computes once per batch of users); a fused model scores by
its one vector. At
inference an optional adaptive-K rule (:mod:`mirec.retrieval.adaptive_k`) switches off
interests a user does not need; :meth:`InterestModel.forward` gives the vectors that search
the catalogue, which is what serving and export call. The item table is shared between the
history and the candidates, as in ComiRec and MIND.

With user profiles (``Config.user_features``, MIND only) the model also holds the dataset's
(n_users, F) profile codes as a buffer and one embedding table per feature. Callers pass
the batch's user rows; each user's F embeddings, concatenated, are MIND's user-profile
vector (Li et al., CIKM 2019, section 4.3), which the extractor joins to every interest
capsule before its ReLU layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mirec.aggregators.max_score import max_over_interests
from mirec.aggregators.mixture import MixtureOfSoftmaxes
from mirec.core.contracts import Extracted, Extractor, Objective, Scorer, Selector
from mirec.data.sequences import UserProfiles
from mirec.regularizers import Penalty
from mirec.retrieval.adaptive_k import adapt_interests
from mirec.selectors.hard_argmax import select_by_argmax


class InterestModel(nn.Module):
    """K interest vectors per user from their history; items scored by dot product."""

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        extractor: Extractor,
        selector: Selector = select_by_argmax,
        regularizers: Sequence[tuple[str, float, Penalty]] = (),
        scorer: Scorer = max_over_interests,
        fuse: nn.Module | None = None,
        adaptive_k: tuple[str, float] | None = None,
        user_profiles: UserProfiles | None = None,
        user_feature_dim: int = 0,
    ) -> None:
        """``selector`` trains one interest per example and ``scorer`` ranks the catalogue
        with all K; a ``fuse`` module (representation aggregation) replaces both with one
        fused vector. ``adaptive_k`` is a parsed rule applied in eval mode.

        ``user_profiles`` (with ``user_feature_dim`` > 0, the width of each feature's
        embedding) makes the model feed MIND's user-profile vector to ``extractor``, which
        must take a ``profile`` of F x ``user_feature_dim`` columns; the batch methods then
        need the user rows."""
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight[1:], std=embedding_dim**-0.5)
        self.extractor = extractor
        self.selector = selector
        self.regularizers = list(regularizers)
        self.scorer = scorer
        self.fuse = fuse
        self.adaptive_k = adaptive_k
        # created after the item table, and only when used: a model without profiles draws
        # the same initial weights, in the same order, as before profiles existed
        if user_profiles is None:
            self.user_feature_codes: torch.Tensor | None = None
            self.user_feature_embeddings: nn.ModuleList | None = None
        else:
            self._init_profiles(user_profiles, user_feature_dim)

    def _init_profiles(self, profiles: UserProfiles, dim: int) -> None:
        width = len(profiles.cardinalities) * dim
        if dim < 1 or self.extractor.profile_dim != width:
            raise ValueError(
                f"user profiles of {len(profiles.cardinalities)} features x {dim} need an "
                f"extractor with profile_dim={width}"
            )
        # data, not weights: rebuilt from the dataset, so kept out of checkpoints
        codes = torch.as_tensor(profiles.codes, dtype=torch.long)
        self.register_buffer("user_feature_codes", codes, persistent=False)
        self.user_feature_embeddings = nn.ModuleList()
        for cardinality in profiles.cardinalities:
            table = nn.Embedding(cardinality + 1, dim)  # row 0: unknown, learned like a value
            nn.init.normal_(table.weight, std=width**-0.5)  # profile norm ~1, like a capsule
            self.user_feature_embeddings.append(table)

    @property
    def num_interests(self) -> int:
        return self.extractor.num_interests

    @property
    def uses_user_rows(self) -> bool:
        """True when the batch methods need the user rows (the model has user profiles)."""
        return self.user_feature_codes is not None

    def profile(
        self, users: torch.Tensor | None, codes: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(B, F x dim) MIND user-profile vectors of (B,) user rows, or of (B, F) profile
        ``codes`` given directly (0 = unknown: a user outside the training log, as the
        exported user tower takes them); None without profiles."""
        if self.user_feature_codes is None or self.user_feature_embeddings is None:
            return None
        if codes is None:
            if users is None:
                raise ValueError(
                    "this model uses user profiles: pass the user rows (or profile codes) of "
                    "the batch"
                )
            codes = self.user_feature_codes[users.to(self.user_feature_codes.device)]
        return torch.cat(
            [table(codes[:, f]) for f, table in enumerate(self.user_feature_embeddings)], dim=-1
        )

    def _interests(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        users: torch.Tensor | None,
        profile_codes: torch.Tensor | None = None,
    ) -> Extracted:
        profile = self.profile(users, profile_codes)
        if profile is None:
            return self.extractor(history, mask)
        return self.extractor(history, mask, profile)

    def extract(
        self,
        histories: torch.Tensor,
        users: torch.Tensor | None = None,
        *,
        profile_codes: torch.Tensor | None = None,
    ) -> Extracted:
        """(B, L) left-padded item indices -> interests (B, K, d) and their routing; in eval
        mode the adaptive-K rule, if any, sets which interests each user keeps. When
        :attr:`uses_user_rows`, the batch's profiles are needed: ``users`` (B,) user rows,
        or their (B, F) ``profile_codes`` (see :meth:`profile`); else both are ignored."""
        mask = histories > 0
        embedded = self.item_embedding(histories)
        extracted = self._interests(embedded, mask, users, profile_codes)
        if self.adaptive_k is not None and not self.training:
            extracted = adapt_interests(extracted, mask, *self.adaptive_k, history=embedded)
        if isinstance(self.scorer, MixtureOfSoftmaxes):
            # once per batch of users: any candidate subset is then scored as in the catalogue
            partition = self.scorer.log_partition(extracted.interests, self.item_vectors())
            extracted = extracted._replace(log_partition=partition)
        return extracted

    def retrieval_interests(self, extracted: Extracted) -> Extracted:
        """The vectors that search the catalogue: the K interests, or the one fused vector."""
        if self.fuse is None:
            return extracted
        return Extracted(self.fuse(extracted).unsqueeze(1))

    def forward(
        self,
        histories: torch.Tensor,
        users: torch.Tensor | None = None,
        *,
        profile_codes: torch.Tensor | None = None,
    ) -> Extracted:
        """(B, L) left-padded item indices -> the vectors that search the catalogue
        (:meth:`retrieval_interests` of :meth:`extract`); ``users`` and ``profile_codes``
        as in :meth:`extract`."""
        return self.retrieval_interests(self.extract(histories, users, profile_codes=profile_codes))

    def score(self, extracted: Extracted, items: torch.Tensor) -> torch.Tensor:
        """(B, N) scores of ``items`` (N, d) for the users of ``extracted``."""
        query = self.retrieval_interests(extracted)
        if isinstance(self.scorer, MixtureOfSoftmaxes):
            partition = query.log_partition
            if partition is None:
                partition = self.scorer.log_partition(query.interests, self.item_vectors())
            return self.scorer(query.interests, items, query.active, partition.to(items.device))
        return self.scorer(query.interests, items, query.active)

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight[1:]

    @property
    def item_table(self) -> nn.Embedding:
        """The item embedding table. The trainer may switch its gradients to sparse (its
        ``sparse`` flag); the objective must then read it with the same flag."""
        return self.item_embedding

    def loss(
        self,
        histories: torch.Tensor,
        targets: torch.Tensor,
        objective: Objective,
        generator: torch.Generator | None = None,
        users: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss of a batch: ``objective`` on the trained user vectors, plus the
        weighted regularizers. ``users`` as in :meth:`extract`.

        ``targets`` (B,) is one next item per history; (B, L) is sequence training: the
        next item after every position of the window (0 where there is none), each scored
        with the interests of its own prefix. Regularizers then read the last position's
        extraction, which is what a (B,) batch of the same histories would give. A
        target-conditioned extractor (diffusion) makes the trained interests from a noised
        copy of each target's embedding, drawing the noise from ``generator``."""
        mask = histories > 0
        history = self.item_embedding(histories)
        # the data a target-conditioned extractor denoises, detached: the item table learns
        # from the softmax, not from being easy to copy out of the noised copy (padding
        # targets embed to 0; their copies are noise, and never scored)
        data = self.item_embedding(targets).detach() if self.extractor.target_conditioned else None
        if targets.dim() == 2:
            if users is not None or not self.extractor.causal:
                raise ValueError("sequence training needs a causal extractor without profiles")
            if data is not None:
                every, extracted = self.extractor.denoise_every_position(
                    history, mask, data, generator
                )
            else:
                every, extracted = self.extractor.every_position(history, mask)
            has_target = targets > 0
            trained, targets = Extracted(every[has_target]), targets[has_target]
        elif data is not None:
            extracted = trained = self.extractor.denoise_target(history, mask, data, generator)
        else:
            extracted = trained = self._interests(history, mask, users)
        if self.fuse is not None:
            user = self.fuse(trained)
        elif isinstance(self.scorer, MixtureOfSoftmaxes):
            user = trained.interests  # every interest trains, through the mixture
        else:
            user = self.selector(trained.interests, self.item_embedding(targets), trained.active)
        loss = objective(user, targets, self.item_embedding.weight, generator, trained.active)
        for _, weight, penalty in self.regularizers:
            loss = loss + weight * penalty(extracted, history, mask)
        return loss
