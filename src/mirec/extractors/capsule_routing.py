"""Dynamic-routing multi-interest extractors: MIND's B2I routing and ComiRec-DR.

Both treat the history as low-level capsules and route them into K interest capsules
(Sabour et al., NeurIPS 2017, "Dynamic Routing Between Capsules"). With prediction vectors
u_hat_{lk} (behaviour l as seen by interest k) and routing logits b_{lk}, each iteration is

    c_{lk} = softmax_k(b_{lk})             coupling: each behaviour splits itself over interests
    z_k    = sum_l c_{lk} u_hat_{lk}
    v_k    = squash(z_k) = ||z_k||^2 / (1 + ||z_k||^2) * z_k / ||z_k||
    b_{lk} <- b_{lk} + <u_hat_{lk}, v_k>

Padding positions get c = 0, so they never change an interest. As in the reference code of
ComiRec and MIND, every iteration but the last uses u_hat with its gradient stopped, so
gradients reach the prediction maps only through the last iteration's capsules.

The two models differ in the prediction vectors, the initial logits and what follows:

* :class:`BehaviorToInterestRouting` (MIND, Li et al., CIKM 2019, section 4.2): one shared
  bilinear map, u_hat_{lk} = S e_l for every k; random initial logits to tell the capsules
  apart; a per-user number of interests (eq. 9); a ReLU tower after routing.
* :class:`CapsuleRouting` (ComiRec-DR, Cen et al., KDD 2020, section 3.2.1): one map per
  position and interest, u_hat_{lk} = W_{lk} e_l; zero initial logits; nothing after.
"""

from __future__ import annotations

import torch
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.core.functional import map_real_rows, masked_softmax
from mirec.extractors import EXTRACTORS

_SQUASH_EPS = 1e-9


def squash(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Capsule non-linearity: keeps the direction of ``z`` and maps its norm n to n^2/(1+n^2).

    Written as z * sqrt(n^2 + eps) / (1 + n^2), which is 0 (with a finite gradient) at z = 0
    and keeps every norm strictly below 1.
    """
    norm2 = z.square().sum(dim, keepdim=True)
    return z * (norm2 + _SQUASH_EPS).sqrt() / (1.0 + norm2)


def _route_shared(
    u_hat: torch.Tensor,
    logits: torch.Tensor,
    mask: torch.Tensor,
    active: torch.Tensor | None,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing with one prediction vector per behaviour, shared by all interests (MIND).

    ``u_hat`` (B, L, d), ``logits`` (B, L, K), ``mask`` (B, L) bool, ``active`` (B, K) bool
    (None: all) -> capsules (B, K, d) and final coupling (B, L, K). Behaviours route among
    the active interests only; an inactive capsule stays zero.

    Works in the interest-major layout (B, K, L): the softmax over K then runs along a
    middle dimension, some ten times faster on the CPU than along a last dimension of 4.
    """
    logits = logits.transpose(1, 2).contiguous()  # (B, K, L)
    keep = mask.unsqueeze(1).to(u_hat.dtype)  # (B, 1, L)
    detached = u_hat.detach()
    among = None if active is None else active.unsqueeze(2)  # (B, K, 1)
    for i in range(iterations):
        last = i == iterations - 1
        # padding behaviours route nowhere
        coupling = masked_softmax(logits, among, dim=1) * keep
        capsules = squash(torch.bmm(coupling, u_hat if last else detached))
        if not last:
            logits = logits + torch.bmm(capsules, detached.transpose(1, 2))
    return capsules, coupling.transpose(1, 2)


def _route_per_interest(
    u_hat: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing with a prediction vector per behaviour and interest (ComiRec-DR).

    Works in the interest-major layout, which makes both reductions batched matmuls:
    ``u_hat`` (B, K, L, d), ``logits`` (B, K, L), ``mask`` (B, L) bool -> capsules (B, K, d)
    and final coupling (B, L, K).
    """
    keep = mask.unsqueeze(1).to(u_hat.dtype)
    detached = u_hat.detach()
    for i in range(iterations):
        last = i == iterations - 1
        coupling = torch.softmax(logits, dim=1) * keep  # over interests; zero on padding
        source = u_hat if last else detached
        capsules = squash(torch.matmul(coupling.unsqueeze(2), source).squeeze(2))  # (B, K, d)
        if not last:
            # (1, d) x (d, L) per user and interest: some three times faster on the CPU
            # than the same products as (L, d) x (d, 1)
            agreement = torch.matmul(capsules.unsqueeze(2), detached.transpose(-1, -2))
            logits = logits + agreement.squeeze(2)
    return capsules, coupling.transpose(1, 2)


def dynamic_interest_count(mask: torch.Tensor, num_interests: int) -> torch.Tensor:
    """MIND eq. 9 with a floor: K'_u = max(1, min(K, floor(log2 n_u))), n_u real behaviours.

    The paper writes max(1, min(K, log2 |I_u|)) without saying how to round; the floor
    gives n_u = 1..3 -> 1, 4..7 -> 2, 8..15 -> 3 and so on. floor(log2 n) is the number of
    powers 2, 4, 8, ... up to n, counted here in integers: a float log2 can land just below
    an integer (onnxruntime's log2(4) does), which would take an interest away. (B, L) bool
    -> (B,) long.
    """
    count = mask.sum(dim=1, keepdim=True)
    powers = 2 ** torch.arange(1, num_interests + 1, device=mask.device)  # 2, 4, ..., 2^K
    return (count >= powers).sum(dim=1).clamp_min(1)


@EXTRACTORS.register("dynamic_routing")
class BehaviorToInterestRouting(Extractor):
    """MIND's multi-interest extractor layer (Li et al., CIKM 2019, section 4.2).

    Behaviour-to-interest (B2I) dynamic routing with one bilinear map S shared by every
    behaviour and interest, u_hat_l = S e_l (eq. 6-7). Since the prediction vectors are the
    same for all interests, the initial logits b_{lk} ~ N(0, sigma^2) are what makes the K
    capsules differ. In training a fresh draw is taken at every forward, as in the paper;
    in eval mode a fixed draw of shape (maxlen, K), made once at construction and kept in the
    state dict, is used (its last L rows), so inference is deterministic.

    With ``dynamic_interests`` a user with n_u real behaviours gets K'_u interests (eq. 9,
    see :func:`dynamic_interest_count`): behaviours are routed among the first K'_u
    capsules only, the others are returned as zero vectors and flagged in
    ``Extracted.active``.

    Each capsule then goes through the paper's ReLU layers H, here
    Linear(d + profile_dim, hidden) -> ReLU -> Linear(hidden, d). With ``profile_dim`` > 0,
    ``forward`` takes a (B, profile_dim) ``profile`` (MIND's user-profile embedding),
    concatenated to every capsule before the tower (section 4.3). The default, 0, is MIND
    without profiles; ``Config.user_features`` sets it to the width of the user-profile
    vector :class:`~mirec.models.interest_model.InterestModel` builds from the dataset's
    user features (one embedding per feature, concatenated).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_interests: int,
        maxlen: int,
        iterations: int = 3,
        sigma: float = 1.0,
        dynamic_interests: bool = True,
        hidden_dim: int | None = None,
        profile_dim: int = 0,
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        hidden_dim = hidden_dim or 4 * embedding_dim
        self.num_interests = num_interests
        self.iterations = iterations
        self.sigma = sigma
        self.dynamic_interests = dynamic_interests
        self.profile_dim = profile_dim
        self.bilinear = nn.Linear(embedding_dim, embedding_dim, bias=False)  # S
        nn.init.normal_(self.bilinear.weight, std=embedding_dim**-0.5)
        self.tower = nn.Sequential(
            nn.Linear(embedding_dim + profile_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, embedding_dim),
        )
        self.register_buffer("eval_logits", sigma * torch.randn(maxlen, num_interests))

    @classmethod
    def from_config(
        cls, config: Config, maxlen: int, profile_dim: int = 0
    ) -> BehaviorToInterestRouting:
        return cls(
            config.embedding_dim,
            config.num_interests,
            maxlen,
            iterations=config.routing_iterations,
            sigma=config.routing_sigma,
            dynamic_interests=config.dynamic_interests,
            hidden_dim=config.hidden_dim,
            profile_dim=profile_dim,
        )

    def initial_logits(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L, K) routing logits: a fresh N(0, sigma^2) draw in training, fixed in eval."""
        batch, length, _ = history.shape
        if self.training:
            shape = (batch, length, self.num_interests)
            return self.sigma * torch.randn(shape, device=history.device, dtype=history.dtype)
        fixed = self.eval_logits[-length:].to(history.dtype)
        return fixed.unsqueeze(0).expand(batch, -1, -1)

    def forward(
        self, history: torch.Tensor, mask: torch.Tensor, profile: torch.Tensor | None = None
    ) -> Extracted:
        if (profile is None) != (self.profile_dim == 0):
            raise ValueError(
                f"profile must be given exactly when profile_dim > 0 (profile_dim is "
                f"{self.profile_dim})"
            )
        logits = self.initial_logits(history)
        active = None
        if self.dynamic_interests:
            count = dynamic_interest_count(mask, self.num_interests)
            slots = torch.arange(self.num_interests, device=history.device)
            active = slots.unsqueeze(0) < count.unsqueeze(1)  # (B, K)
        # in training, the maps skip what is masked out downstream: the padding (about
        # half of a training history) and the inactive interests; eval mode keeps the
        # dense form, which the ONNX export traces
        sparse = self.training
        u_hat = map_real_rows(self.bilinear, history, mask) if sparse else self.bilinear(history)
        capsules, coupling = _route_shared(u_hat, logits, mask, active, self.iterations)
        if profile is not None:
            profile = profile.unsqueeze(1).expand(-1, self.num_interests, -1)
            capsules = torch.cat([capsules, profile.to(capsules.dtype)], dim=-1)
        if sparse and active is not None:
            interests = map_real_rows(self.tower, capsules, active)
        else:
            interests = self.tower(capsules)
        if active is not None:
            interests = interests * active.unsqueeze(-1).to(interests.dtype)
        return Extracted(interests, coupling, active)


@EXTRACTORS.register("capsule_routing")
class CapsuleRouting(Extractor):
    """ComiRec-DR's extractor (Cen et al., KDD 2020, section 3.2.1; Sabour et al. 2017).

    A separate bilinear map per position and interest, u_hat_{lk} = W_{lk} e_l (eq. 5), with
    W of shape (maxlen, K, d, d) and positions aligned to the end (the most recent item
    always uses W[-1]). Routing logits start at zero (eq. 6-8) and the squashed capsules
    are the interests; there is no ReLU tower and no dynamic interest number.
    """

    def __init__(
        self, embedding_dim: int, num_interests: int, maxlen: int, iterations: int = 3
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.num_interests = num_interests
        self.iterations = iterations
        self.weight = nn.Parameter(torch.empty(maxlen, num_interests, embedding_dim, embedding_dim))
        nn.init.normal_(self.weight, std=embedding_dim**-0.5)  # u_hat keeps e's scale

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> CapsuleRouting:
        return cls(config.embedding_dim, config.num_interests, maxlen, config.routing_iterations)

    def predictions(self, history: torch.Tensor) -> torch.Tensor:
        """(B, L, d) -> (B, K, L, d) prediction vectors u_hat_{lk} = W_{lk} e_l."""
        weight = self.weight[-history.shape[1] :]  # (L, K, d_out, d_in)
        return torch.einsum("bli,lkoi->bklo", history, weight)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        u_hat = self.predictions(history)
        logits = u_hat.new_zeros(u_hat.shape[:3])  # (B, K, L)
        capsules, coupling = _route_per_interest(u_hat, logits, mask, self.iterations)
        return Extracted(capsules, coupling)
