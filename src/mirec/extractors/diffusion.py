"""K interests denoised from noise, conditioned on the history, in the style of DiffuRec
(Li, Sun and Li, "DiffuRec: A Diffusion Model for Sequential Recommendation", TOIS 2023).

DiffuRec treats the next item's embedding as the data x_0 of a Gaussian diffusion. In its
diffusion phase a level t is drawn and the target is corrupted in closed form,

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                       (DDPM eq. 4)

and its Approximator, a transformer over the history that reads x_t and the level's
embedding, predicts x0_hat = f(x_t, t, history); the prediction is trained with the
cross-entropy of its inner products with every item (the paper's loss, which is mirec's
softmax objective). Its reverse phase starts from Gaussian noise and denoises step by step
into the representation that ranks the catalogue. The schedule and the sampler's
arithmetic are in :mod:`mirec.core.diffusion`.

mirec's extractor makes K interests this way:

* The history is encoded once (``encoder_layers`` > 0: SASRec's causal transformer,
  :mod:`mirec.extractors.causal_transformer`; 0: the item embeddings plus learned
  positions), into states H (B, L, d).
* Interest k is a token z_k = W x_t^k + q_k + D(t): its own noised copy x_t^k of the
  target, a learned query q_k that tells the K slots apart, and the level's embedding D(t)
  (sinusoidal, Vaswani et al. 2017, then Linear-SiLU-Linear, as DiffuRec's step embedding).
  DiffuRec instead adds its one noised x_t (scaled by a random lambda, its "uncertainty
  injection") to every history item and runs the transformer over the sum; here the K
  noised tokens attend to H, so the history is encoded once for all K interests and all
  denoising steps.
* One pre-norm denoising block: the K tokens attend to each other (so the interests can
  spread apart), then each attends over H with one masked softmax (its weights over the
  history are the interest's routing, zero on padding), then a feed-forward layer; a
  layer norm and a linear map give x0_hat^k, the interest.
* Training (:meth:`DiffusionExtractor.denoise_target`): one level t per example, drawn
  uniformly, and independent noise per interest, so the K tokens start from different
  points at the same noise level. The model's selector (hard argmax) trains the interest
  nearest the target, and its softmax objective is DiffuRec's cross-entropy. With the
  causal encoder the extractor is causal: ``sequence_training`` denoises, at every
  position of a window, a noised copy of the next item from that position's prefix
  (:meth:`DiffusionExtractor.denoise_every_position`).
* Inference (:meth:`DiffusionExtractor.forward`): every user's K interests start from the
  same K fixed noise vectors (drawn once from the config's seed and stored with the
  weights, so evaluation, serving and the ONNX export are reproducible), and take
  ``diffusion_steps`` DDIM steps (Song et al., ICLR 2021, eq. 12, sigma = 0) down evenly
  spaced levels, from T - 1 to 0; the last x0_hat are the interests.

The diffused data is the target's direction scaled to norm ``signal`` (its embedding
normalised, times ``diffusion_signal``), and the noise has standard deviation d^-1/2 per
coordinate (norm about 1), so a level's signal-to-noise ratio is
signal^2 abar_t / (1 - abar_t) however large the item embeddings grow in training. With
signal 1 the denoiser could read the target out of x_t at most levels, learned to copy it
and left the levels where it must predict from the history untrained (ml-100k: validation
Recall@50 0.09 after one epoch, below popularity; with the raw, growing embeddings 0.05).
At 0.1 the target is readable at the lowest levels only, and that still let the denoiser
lean on it on amazon-beauty, whose short histories say little (its interests barely
differed between users: test Recall@50 0.078, coverage@50 0.04). At the default 0.01 no
level shows it (the largest SNR, at the lowest level of the cosine schedule with T = 32,
is 0.03): the interests are predicted from the history and the noise, and the reverse
steps, which feed back the prediction at that norm, change them little. DiffuRec's
lambda, the scale of its noised target against the history embeddings (0.001 in the
authors' code), does the same. Between sampling steps the prediction is put back on that
sphere; the interests themselves, the last prediction, keep their norm, which the softmax
uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mirec.core.config import Config
from mirec.core.contracts import Extracted, Extractor
from mirec.core.diffusion import (
    add_noise,
    beta_schedule,
    cumulative_alphas,
    ddim_step,
    sampling_levels,
)
from mirec.core.functional import masked_softmax
from mirec.extractors import EXTRACTORS
from mirec.extractors.causal_transformer import states_or_positions


def unit(vectors: torch.Tensor) -> torch.Tensor:
    """Each row scaled to norm 1: the diffused data is a direction (module docstring)."""
    return F.normalize(vectors, dim=-1)


def sinusoidal_table(levels: int, dim: int) -> torch.Tensor:
    """(levels, dim): row t is [cos(t w_i), sin(t w_i)] with w_i = 10000^(-i / (dim / 2)),
    the Transformer's position encoding (Vaswani et al. 2017) used as DiffuRec's and DDPM's
    step embedding; an odd ``dim`` ends with a zero column."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(levels, dtype=torch.float64).unsqueeze(1) * frequencies
    table = torch.cat([angles.cos(), angles.sin(), torch.zeros(levels, dim % 2)], dim=1)
    return table.float()


class DenoisingBlock(nn.Module):
    """One pre-norm block over the K interest tokens: self-attention among them, masked
    attention over the history states, a feed-forward layer; each with a residual."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, 1, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.merge = nn.Linear(dim, dim)
        self.norm_feed = nn.LayerNorm(dim)
        # as wide as the causal transformer's feed-forward layers (dim_feedforward = d)
        self.feed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, tokens: torch.Tensor, states: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, *P, K, d) tokens (P: no axis, or one per position of a window), (B, S, d)
        history states and (B, *P, S) the states each may read -> the updated tokens and
        (B, *P, K, S) attention over the history (rows sum to 1; zero where not allowed,
        and all zero where nothing is)."""
        h = self.norm_self(tokens)
        flat = h.reshape(-1, *h.shape[-2:])  # the K tokens of one user (and position)
        mixed = self.self_attention(flat, flat, flat, need_weights=False)[0].reshape(h.shape)
        tokens = tokens + self.dropout(mixed)
        h = self.norm_cross(tokens)
        logits = torch.einsum("b...kd,bsd->b...ks", self.query(h), self.key(states)) * self.scale
        attention = masked_softmax(logits, allowed.unsqueeze(-2), -1)
        read = torch.einsum("b...ks,bsd->b...kd", attention, self.value(states))
        tokens = tokens + self.dropout(self.merge(read))
        tokens = tokens + self.dropout(self.feed(self.norm_feed(tokens)))
        return tokens, attention


@EXTRACTORS.register("diffusion")
class DiffusionExtractor(Extractor):
    """(B, L, d) history + (B, L) mask -> K interests denoised from fixed noise; trained by
    denoising noised copies of the target (module docstring)."""

    target_conditioned = True

    def __init__(
        self,
        embedding_dim: int,
        num_interests: int,
        maxlen: int,
        encoder_layers: int = 2,
        dropout: float = 0.2,
        levels: int = 32,
        steps: int = 4,
        schedule: str = "cosine",
        signal: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.num_interests = num_interests
        self.levels = levels
        self.visited = sampling_levels(levels, steps)
        self.noise_scale = embedding_dim**-0.5
        self.signal = signal
        self.encoder, self.position = states_or_positions(
            embedding_dim, maxlen, encoder_layers, dropout
        )
        self.queries = nn.Parameter(torch.empty(num_interests, embedding_dim))
        nn.init.normal_(self.queries, std=embedding_dim**-0.5)
        self.read_noised = nn.Linear(embedding_dim, embedding_dim)
        self.step_embedding = nn.Sequential(
            nn.Linear(embedding_dim, 4 * embedding_dim),
            nn.SiLU(),
            nn.Linear(4 * embedding_dim, embedding_dim),
        )
        self.block = DenoisingBlock(embedding_dim, dropout)
        self.predict = nn.Sequential(
            nn.LayerNorm(embedding_dim), nn.Linear(embedding_dim, embedding_dim)
        )
        # derived from the settings, so not stored with the weights
        abar = cumulative_alphas(beta_schedule(schedule, levels)).float()
        self.register_buffer("abar", abar, persistent=False)
        table = sinusoidal_table(levels, embedding_dim)
        self.register_buffer("level_table", table, persistent=False)
        # drawn from its own generator (the global one is left as it was, so the other
        # weights initialise as without it) and stored with the weights
        start = torch.randn(
            num_interests, embedding_dim, generator=torch.Generator().manual_seed(seed)
        )
        self.register_buffer("start_noise", start * self.noise_scale)

    @classmethod
    def from_config(cls, config: Config, maxlen: int, profile_dim: int = 0) -> DiffusionExtractor:
        return cls(
            config.embedding_dim,
            config.num_interests,
            maxlen,
            config.encoder_layers,
            config.dropout,
            levels=config.diffusion_timesteps,
            steps=config.diffusion_steps,
            schedule=config.noise_schedule,
            signal=config.diffusion_signal,
            seed=config.seed,
        )

    @property
    def causal(self) -> bool:
        """True with the causal encoder: the interests after position t then read the
        states up to t only, so :meth:`every_position` works (sequence training)."""
        return self.encoder is not None

    def _states(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, d) what the interests attend to: contextual states, or items + positions."""
        if self.encoder is not None:
            return self.encoder(history, mask)
        return history + self.position[-history.shape[1] :]

    def _prefixes(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, L): the real items up to each position, what its interests may read."""
        if self.encoder is None:
            raise ValueError("every_position needs the causal encoder (encoder_layers > 0)")
        length = mask.shape[1]
        earlier = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        return earlier & mask.unsqueeze(1)

    def _denoise(
        self, states: torch.Tensor, allowed: torch.Tensor, noised: torch.Tensor, level: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x0_hat^k = f(x_t^k, t, history) for (B, *P, K, d) ``noised`` at ``level``
        (broadcast against (B, *P)); and the routing, each interest's attention over the
        history, (B, *P, S, K)."""
        step = self.step_embedding(self.level_table[level]).unsqueeze(-2)
        tokens = self.read_noised(noised) + self.queries + step
        tokens, attention = self.block(tokens, states, allowed)
        return self.predict(tokens), attention.transpose(-1, -2)

    def _diffuse(
        self,
        states: torch.Tensor,
        allowed: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DiffuRec's diffusion phase for (B, *P, d) targets: a uniform level per target,
        independent noise per interest, x_t^k = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps^k
        (DDPM eq. 4) with x_0 the target's direction, then the K predictions x0_hat^k."""
        shape, device = target.shape[:-1], target.device
        level = torch.randint(self.levels, shape, device=device, generator=generator)
        noise = torch.randn(
            *shape, self.num_interests, target.shape[-1], device=device, generator=generator
        )
        x0 = self.signal * unit(target).unsqueeze(-2)
        noised = add_noise(x0, noise * self.noise_scale, self.abar[level][..., None, None])
        return self._denoise(states, allowed, noised, level)

    def _sample(
        self, states: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reverse phase for (B, *P, S) ``allowed``: from the fixed starting noise, DDIM
        steps down the visited levels; the last prediction is the interests."""
        noised = self.start_noise.expand(*allowed.shape[:-1], -1, -1)
        for i, level in enumerate(self.visited):
            at = torch.full((1,), level, dtype=torch.long, device=states.device)
            interests, routing = self._denoise(states, allowed, noised, at)
            if i + 1 < len(self.visited):
                # back on the sphere the training data lies on
                guess = self.signal * unit(interests)
                noised = ddim_step(noised, guess, self.abar[level], self.abar[self.visited[i + 1]])
        return interests, routing

    def denoise_target(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Extracted:
        """The K predictions from a noised copy of each (B, d) target (:meth:`_diffuse`)."""
        return Extracted(*self._diffuse(self._states(history, mask), mask, target, generator))

    def denoise_every_position(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, Extracted]:
        """Sequence training: at every position, the K predictions from a noised copy of
        the (B, L, d) next items, each reading its own prefix, (B, L, K, d); and the last
        position's :class:`Extracted`."""
        states, allowed = self._states(history, mask), self._prefixes(mask)
        interests, routing = self._diffuse(states, allowed, targets, generator)
        return interests, Extracted(interests[:, -1], routing[:, -1])

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> Extracted:
        return Extracted(*self._sample(self._states(history, mask), mask))

    def every_position(
        self, history: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, Extracted]:
        """The interests :meth:`forward` gives after every prefix, (B, L, K, d), and the
        last position's :class:`Extracted` (what :meth:`forward` returns)."""
        interests, routing = self._sample(self._states(history, mask), self._prefixes(mask))
        return interests, Extracted(interests[:, -1], routing[:, -1])
