"""Gaussian diffusion arithmetic: noise schedules, the forward process in closed form and
the deterministic reverse step, as the diffusion extractor uses them.

Notation of Ho et al. (DDPM, NeurIPS 2020), with the T noise levels indexed t = 0..T-1
(level t is the data after t + 1 noising steps):

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)            (DDPM eq. 2)
    alpha_t = 1 - beta_t,   abar_t = prod_{s <= t} alpha_s
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I)       (DDPM eq. 4)

DiffuRec (Li et al., TOIS 2023) corrupts the target item's embedding this way in its
diffusion phase. Its reverse phase predicts x_0 from x_t and the history and steps back
through the DDPM posterior (DDPM eqs. 6-7) over all T levels; mirec steps back with DDIM's
deterministic update instead (Song et al., ICLR 2021, eq. 12 with sigma_t = 0), over a few
of the T levels, so that the only randomness at inference is the starting noise:

    eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
    x_s     = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_hat             (s < t)
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear")
MAX_BETA = 0.999
"""Betas are clipped here (Nichol and Dhariwal, ICML 2021, section 3.2): a beta of 1 would
make the last level pure noise and its DDIM step divide by zero."""
COSINE_OFFSET = 0.008
"""s of the cosine schedule: keeps beta_0 from being vanishingly small."""


def beta_schedule(name: str, steps: int) -> torch.Tensor:
    """(T,) float64 betas of schedule ``name`` over ``steps`` = T levels.

    * ``cosine`` (Nichol and Dhariwal, ICML 2021, eq. 17):
      abar(t) = f(t) / f(0), f(t) = cos((t / T + s) / (1 + s) * pi / 2)^2, and
      beta_t = 1 - abar(t + 1) / abar(t).
    * ``linear`` (Ho et al. 2020, section 4): betas evenly from 1e-4 to 0.02 over 1,000
      levels; over T levels both ends are scaled by 1000 / T, as in improved DDPM's code
      and DiffuRec's, so that abar at the last level is alike whatever T.

    Both are clipped to :data:`MAX_BETA`."""
    if steps < 1:
        raise ValueError(f"a noise schedule needs at least one level, got {steps}")
    if name == "cosine":

        def f(t: float) -> float:
            return math.cos((t / steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

        betas = torch.tensor([1 - f(t + 1) / f(t) for t in range(steps)], dtype=torch.float64)
    elif name == "linear":
        scale = 1000 / steps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown noise schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return betas.clamp(max=MAX_BETA)


def cumulative_alphas(betas: torch.Tensor) -> torch.Tensor:
    """(T,) abar_t = prod_{s <= t} (1 - beta_s)."""
    return torch.cumprod(1 - betas, dim=0)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4); ``abar`` broadcasts
    against ``x0`` (one level per row: shape (..., 1))."""
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ddim_step(
    x_t: torch.Tensor, x0_hat: torch.Tensor, abar_t: torch.Tensor, abar_s: torch.Tensor
) -> torch.Tensor:
    """x_s from x_t and the predicted x_0 by DDIM's deterministic update (Song et al. 2021,
    eq. 12, sigma = 0): the noise x_t implies, put back at level s's strength."""
    eps_hat = (x_t - abar_t.sqrt() * x0_hat) / (1 - abar_t).sqrt()
    return add_noise(x0_hat, eps_hat, abar_s)


def sampling_levels(levels: int, steps: int) -> list[int]:
    """The ``steps`` levels the sampler visits, from the noisiest (T - 1) down to 0, evenly
    spaced (DDIM's respacing of the T training levels); one step visits T - 1 only."""
    if not 1 <= steps <= levels:
        raise ValueError(f"steps must be in 1..{levels} (the levels), got {steps}")
    if steps == 1:
        return [levels - 1]
    return [round((levels - 1) * (steps - 1 - i) / (steps - 1)) for i in range(steps)]
