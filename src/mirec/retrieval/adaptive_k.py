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
* ``cluster:t`` counts the clusters of the history itself, not of the routing: the history's
  item embeddings, L2-normalised (so squared Euclidean distance is 2 - 2 cos: cosine
  geometry), are clustered by k-means for k = 1..K and k is the one with the best mean
  silhouette (Rousseeuw, J. Comput. Appl. Math. 1987), ``s_i = (b_i - a_i) / max(a_i, b_i)``
  with a_i the mean distance of item i to its own cluster and b_i to the nearest other one
  (0 for an item alone in its cluster, as scikit-learn's ``silhouette_score``). The
  silhouette is undefined for k = 1, so one cluster is kept when no k >= 2 reaches a mean
  silhouette of t (t is a silhouette, in [-1, 1]). k-means splits even one tight group,
  and such a split still scores about 0.2, so t = 0.25 (Kaufman and Rousseeuw's "no
  substantial structure" below it) is the sensible start. The user keeps k interests: the clusters,
  largest first, each take the still unmatched active interest of highest cosine with their
  centroid. Matching by centroid rather than by routing mass is deliberate: interests are
  scored against the same item table the centroids live in, and a self-attentive
  extractor's soft masses are even whatever it attends to (see ``share``), so the mass
  would not say which interest stands for which cluster. The rule reads no routing. It is
  batched and deterministic: farthest-point seeds from the history's densest item and a
  fixed :data:`KMEANS_ITERATIONS` Lloyd iterations; a user with fewer active interests
  than clusters (MIND's rule) keeps them all.

For ``mass``, ``share`` and ``merge`` the user's heaviest interest is always kept; every rule
keeps at least one interest, and an interest already inactive (MIND's rule) stays inactive.
The result is a new ``Extracted`` whose ``active`` mask gives each user their own K'_u.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mirec.core.config import bad_setting
from mirec.core.contracts import Extracted
from mirec.errors import ConfigError

RULES = ("mass", "share", "merge", "cluster")

KMEANS_ITERATIONS = 10
"""Lloyd iterations of the ``cluster`` rule: a fixed number, so the result (and the cost)
does not depend on when a batch happens to converge."""


def parse_adaptive_k(spec: str | None) -> tuple[str, float] | None:
    """``"mass:0.1"`` or ``"merge:0.9"`` -> (rule, threshold); None -> None. The
    threshold is a share in [0, 1] (``merge``: a cosine, ``cluster``: a silhouette, in
    [-1, 1]); anything else is the ConfigError of the setting ``adaptive_k``."""
    if spec is None:
        return None
    rule, _, raw = spec.partition(":")
    if rule not in RULES:
        known = ", ".join(f"{r}:t" for r in RULES)
        bad_setting("adaptive_k", spec, f"expected {known}, or unset")
    try:
        threshold = float(raw)
    except ValueError:
        bad_setting("adaptive_k", spec, f"expected {rule}:<number>")
    low = -1.0 if rule in ("merge", "cluster") else 0.0
    if not (math.isfinite(threshold) and low <= threshold <= 1.0):
        bad_setting("adaptive_k", spec, f"the threshold of {rule} must be a number in [{low:g}, 1]")
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


def routed_shares(
    extracted: Extracted, histories: torch.Tensor, half_life: float | None = None
) -> torch.Tensor:
    """(B, L) histories (item indices, 0 padding, left-padded: the most recent item last)
    and what the extractor made of them -> (B, K) the share of each history's items that
    route to each interest more than to any other (:func:`assign_behaviours`,
    :func:`interest_shares`): the shares that ``mirec inspect`` shows, the diagnostics
    measure and the quota merge divides a list by. With ``half_life`` an item's weight
    halves every ``half_life`` positions back from the last (``quota_half_life``)."""
    assignment = assign_behaviours(extracted, histories > 0)
    k = extracted.interests.shape[1]
    if half_life is None:
        return interest_shares(assignment, k)
    back = torch.arange(histories.shape[1] - 1, -1, -1, device=histories.device)
    weight = torch.exp2(-back.to(torch.float64) / half_life)
    real = assignment >= 0
    routed = F.one_hot(assignment.clamp_min(0), k).masked_fill(~real.unsqueeze(-1), 0)
    mass = (routed.to(torch.float64) * weight[None, :, None]).sum(1)
    return mass / mass.sum(1, keepdim=True).clamp_min(1e-300)


def adapt_interests(
    extracted: Extracted,
    mask: torch.Tensor,
    rule: str,
    threshold: float,
    *,
    history: torch.Tensor | None = None,
) -> Extracted:
    """Apply ``rule`` (see the module docstring) and return the adjusted interests.

    ``history`` (B, L, d) is the embedded history the extractor read (padding where ``mask``
    is False); only the ``cluster`` rule reads it, and it needs it."""
    if rule == "cluster":
        if history is None:
            raise ValueError("adaptive_k cluster needs the embedded history")
        return _keep_cluster_count(extracted, history, mask, threshold)
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


def farthest_point_seeds(points: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """(B, L, d) points, (B, L) mask -> (B, count) positions of k-means seeds.

    The first seed is the densest point, the one with the largest summed similarity to the
    others (the point nearest the mean); each next one is the real point farthest from the
    seeds so far (Gonzalez's farthest-point traversal). Ties go to the first position, so the
    seeds are deterministic, and the first k seeds of ``count`` are the seeds for k."""
    real = mask.to(points.dtype).unsqueeze(-1)
    density = torch.einsum("bld,bd->bl", points, (points * real).sum(1))
    first = density.masked_fill(~mask, -torch.inf).argmax(1)
    rows = torch.arange(points.shape[0], device=points.device)
    seeds = [first]
    nearest = torch.linalg.vector_norm(points - points[rows, first].unsqueeze(1), dim=-1)
    for _ in range(count - 1):
        seeds.append(nearest.masked_fill(~mask, -1.0).argmax(1))
        distance = torch.linalg.vector_norm(points - points[rows, seeds[-1]].unsqueeze(1), dim=-1)
        nearest = torch.minimum(nearest, distance)
    return torch.stack(seeds, 1)


def kmeans(
    points: torch.Tensor, mask: torch.Tensor, seeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of each user's real points from the points at ``seeds`` (B, k),
    :data:`KMEANS_ITERATIONS` iterations -> (B, L) cluster of each point (-1 on padding) and
    (B, k, d) centroids. A cluster left empty keeps its previous centroid."""
    rows = torch.arange(points.shape[0], device=points.device).unsqueeze(1)
    centroids = points[rows, seeds]
    k = seeds.shape[1]
    for _ in range(KMEANS_ITERATIONS):
        labels = torch.cdist(points, centroids).argmin(-1)
        members = F.one_hot(labels, k).to(points.dtype) * mask.unsqueeze(-1).to(points.dtype)
        counts = members.sum(1).unsqueeze(-1)
        means = members.transpose(1, 2) @ points / counts.clamp_min(1)
        centroids = torch.where(counts > 0, means, centroids)
    labels = torch.cdist(points, centroids).argmin(-1)
    return labels.masked_fill(~mask, -1), centroids


def silhouette(distances: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, L, L) pairwise distances, (B, L) clusters in 0..k-1 (-1 on padding) -> (B,) mean
    silhouette over the real points; NaN where it is undefined (fewer than 2 non-empty
    clusters, an empty cluster, or as many clusters as points, as scikit-learn refuses)."""
    real = labels >= 0
    members = F.one_hot(labels.clamp_min(0), k).to(distances.dtype)
    members = members * real.unsqueeze(-1).to(distances.dtype)
    counts = members.sum(1)  # (B, k)
    to_cluster = distances @ members  # (B, L, k): summed distance of each point to each cluster
    own = labels.clamp_min(0).unsqueeze(-1)
    own_count = counts.gather(1, own.squeeze(-1))
    a = to_cluster.gather(2, own).squeeze(-1) / (own_count - 1).clamp_min(1)
    mean_to = to_cluster / counts.unsqueeze(1).clamp_min(1)
    others = F.one_hot(own.squeeze(-1), k).bool() | (counts == 0).unsqueeze(1)
    b = mean_to.masked_fill(others, torch.inf).amin(-1)
    score = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    score = torch.where(real & (own_count > 1), score, torch.zeros_like(score))
    n_real = real.sum(1)
    mean = score.sum(1) / n_real.clamp_min(1)
    defined = (k >= 2) & (counts > 0).all(1) & (n_real > k)
    return mean.where(defined, torch.nan)


def count_clusters(
    history: torch.Tensor, mask: torch.Tensor, max_k: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``cluster`` rule's k: (B, L, d) history, (B, L) mask -> (B,) k in 1..max_k, and
    that k's (B, max_k, d) centroids and (B, max_k) cluster sizes (zero beyond k)."""
    points = F.normalize(history, dim=-1)
    distances = torch.cdist(points, points)
    seeds = farthest_point_seeds(points, mask, max_k)
    b, _, d = points.shape
    scores = torch.full((b, max_k), torch.nan, dtype=points.dtype, device=points.device)
    all_centroids = points.new_zeros(b, max_k, max_k, d)
    all_sizes = points.new_zeros(b, max_k, max_k)
    for k in range(1, max_k + 1):
        labels, centroids = kmeans(points, mask, seeds[:, :k])
        all_centroids[:, k - 1, :k] = centroids
        all_sizes[:, k - 1, :k] = F.one_hot(labels.clamp_min(0), k).mul(mask.unsqueeze(-1)).sum(1)
        scores[:, k - 1] = silhouette(distances, labels, k)
    # the best k >= 2 (the smallest on ties), if it reaches the threshold; else one cluster
    best = scores.nan_to_num(-torch.inf).argmax(1)
    chosen = torch.where(scores.gather(1, best.unsqueeze(1)).squeeze(1) >= threshold, best, 0)
    rows = torch.arange(b, device=points.device)
    return chosen + 1, all_centroids[rows, chosen], all_sizes[rows, chosen]


def _keep_cluster_count(
    extracted: Extracted, history: torch.Tensor, mask: torch.Tensor, threshold: float
) -> Extracted:
    interests = extracted.interests
    b, k_max = interests.shape[:2]
    available = extracted.active
    if available is None:
        available = torch.ones(b, k_max, dtype=torch.bool, device=interests.device)
    available = available.clone()
    chosen, centroids, sizes = count_clusters(history, mask, k_max, threshold)
    order = sizes.argsort(dim=1, descending=True, stable=True)
    rows = torch.arange(b, device=interests.device)
    unit_interests = F.normalize(interests, dim=-1)
    unit_centroids = F.normalize(centroids, dim=-1)
    kept = torch.zeros_like(available)
    for position in range(k_max):
        cosine = torch.einsum(
            "bd,bkd->bk", unit_centroids[rows, order[:, position]], unit_interests
        )
        pick = cosine.masked_fill(~available, -torch.inf).argmax(1)
        # an empty history's zero centroid has cosine 0 with all: the first active one
        take = (position < chosen) & available.any(1)
        kept[rows[take], pick[take]] = True
        available[rows[take], pick[take]] = False
    return extracted._replace(active=kept)
