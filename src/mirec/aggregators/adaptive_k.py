"""Data-driven number of interests per user, decided at inference from the extractor's output.

MIND's rule K'_u = max(1, min(K, log2 |I_u|)) looks only at the history length. These
rules look at what the extractor did with the history (the survey's open problem of
choosing K, arXiv 2506.15284 section 7):

* ``mass:t`` drops an interest whose share of the history is below t. Each behaviour l
  splits itself over the interests in proportion to its routing, p(k | l) =
  r_lk / sum_j r_lj (for capsule routing this is the coupling itself; for attention it
  says which interest attends to the behaviour most), and mass_k = mean_l p(k | l). With K
  interests an even split gives every interest 1/K.
* ``share:t`` drops an interest that fewer than a share t of the history items route to
  more than to any other interest (:func:`interest_shares`). For capsule routing this is
  close to ``mass``; for self-attention it is the rule that works: every attention head's
  weights sum to 1 over the history, so the soft masses stay near 1/K even when two
  interests attend to the same items, while the hard shares do not.
* ``merge:t`` folds near-duplicate interests: visiting interests from the heaviest down,
  one whose cosine with an interest already kept exceeds t is merged into it (the kept
  vector becomes the mass-weighted mean of the two) and switched off.

The user's heaviest interest is always kept, and an interest already inactive (MIND's
rule) stays inactive. The result is a new ``Extracted`` whose ``active`` mask gives each
user their own K'_u.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mirec.core.contracts import Extracted
from mirec.errors import ConfigError

RULES = ("mass", "share", "merge")


def parse_adaptive_k(spec: str | None) -> tuple[str, float] | None:
    """``"mass:0.1"`` or ``"merge:0.9"`` -> (rule, threshold); None or "" -> None."""
    if not spec:
        return None
    rule, _, raw = spec.partition(":")
    if rule not in RULES:
        raise ConfigError(f"adaptive_k {spec!r}: unknown rule {rule!r}; known: {', '.join(RULES)}")
    try:
        threshold = float(raw)
    except ValueError as err:
        raise ConfigError(f"adaptive_k {spec!r}: expected {rule}:<number>") from err
    return rule, threshold


def behaviour_shares(routing: torch.Tensor) -> torch.Tensor:
    """(B, L, K) routing -> p(k | l): how each behaviour splits itself over the interests
    (the coupling itself for capsule routing; for attention, which interest attends to the
    behaviour most)."""
    return routing / routing.sum(-1, keepdim=True).clamp_min(1e-12)


def interest_mass(routing: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, K) routing, (B, L) mask -> (B, K) each interest's share of the history."""
    share = behaviour_shares(routing) * mask.unsqueeze(-1).to(routing.dtype)
    return share.sum(1) / mask.sum(1, keepdim=True).clamp_min(1).to(share.dtype)


def assign_behaviours(extracted: Extracted, mask: torch.Tensor) -> torch.Tensor:
    """(B, L): the interest each history item routes to most, -1 on padding.

    Routing is read per behaviour (:func:`behaviour_shares`), so an attention extractor's
    item goes to the interest that attends to it most; interests a user does not have
    (dynamic K) are never chosen."""
    k = extracted.interests.shape[1]
    if extracted.routing is None:  # one interest, nothing to route
        share = torch.ones(*mask.shape, k, device=mask.device)
    else:
        share = behaviour_shares(extracted.routing)
    if extracted.active is not None:
        share = share.masked_fill(~extracted.active.unsqueeze(1), -1.0)
    return share.argmax(-1).masked_fill(~mask, -1)


def interest_shares(assignment: torch.Tensor, k: int) -> torch.Tensor:
    """(B, L) assignment of :func:`assign_behaviours` (-1 on padding) -> (B, K) the share
    of each user's history items assigned to interest k."""
    real = assignment >= 0
    counts = F.one_hot(assignment.clamp_min(0), k).masked_fill(~real.unsqueeze(-1), 0).sum(1)
    return counts / real.sum(1, keepdim=True).clamp_min(1)


def adapt_interests(
    extracted: Extracted, mask: torch.Tensor, rule: str, threshold: float
) -> Extracted:
    """Apply ``rule`` (see the module docstring) and return the adjusted interests."""
    if extracted.routing is None:
        raise ConfigError(f"adaptive_k {rule}: the extractor reports no routing to measure")
    interests = extracted.interests
    active = extracted.active
    if active is None:
        active = torch.ones(interests.shape[:2], dtype=torch.bool, device=interests.device)
    if rule == "share":
        assignment = assign_behaviours(extracted, mask)
        mass = interest_shares(assignment, interests.shape[1]).to(interests.dtype)
    else:
        mass = interest_mass(extracted.routing, mask)
    mass = mass.masked_fill(~active, -1.0)
    heaviest = F.one_hot(mass.argmax(1), interests.shape[1]).bool()
    if rule in ("mass", "share"):
        return extracted._replace(active=active & (mass >= threshold) | heaviest)
    return _merge(extracted, interests, active, mass.clamp_min(0.0), threshold)


def _merge(
    extracted: Extracted,
    interests: torch.Tensor,
    active: torch.Tensor,
    mass: torch.Tensor,
    threshold: float,
) -> Extracted:
    # K is small (<= 8 in practice), so a loop over interests is cheap; users stay batched
    order = mass.argsort(1, descending=True)
    rows = torch.arange(interests.shape[0], device=interests.device)
    unit = F.normalize(interests, dim=-1)
    merged = interests * mass.unsqueeze(-1)
    weight = mass.clone()
    kept = torch.zeros_like(active)
    for position in range(interests.shape[1]):
        k = order[:, position]
        is_active = active[rows, k]
        cosine = torch.einsum("bd,bjd->bj", unit[rows, k], unit).masked_fill(~kept, -2.0)
        best = cosine.argmax(1)
        fold = is_active & (cosine[rows, best] > threshold)
        keep = is_active & ~fold
        kept[rows[keep], k[keep]] = True
        # fold k into its closest kept interest: accumulate the mass-weighted sum
        merged[rows[fold], best[fold]] += merged[rows[fold], k[fold]]
        weight[rows[fold], best[fold]] += weight[rows[fold], k[fold]]
    vectors = merged / weight.unsqueeze(-1).clamp_min(1e-12)
    # an interest with no mass at all keeps its own vector
    vectors = torch.where((weight > 0).unsqueeze(-1), vectors, interests)
    return extracted._replace(
        interests=torch.where(kept.unsqueeze(-1), vectors, interests), active=kept
    )
