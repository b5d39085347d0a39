"""The device a run asks for (``Config.device``), checked against what this machine has."""

from __future__ import annotations

import contextlib

import torch

from mirec.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device of ``config.device``; a ConfigError when this machine has none such
    (``cuda`` without CUDA, ``cuda:N`` beyond the GPUs present, ``mps`` off Apple silicon)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"setting device={name!r}: must be auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this build of torch has none" if torch.version.cuda is None else "no GPU seen"
            raise ConfigError(
                f"setting device={name!r}: CUDA is not available ({why}); "
                "use device=cpu or device=auto"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"setting device={name!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"setting device={name!r}: MPS (Apple silicon) is not available here; "
            "use device=cpu or device=auto"
        )
    elif device.type != "cpu":
        raise ConfigError(f"setting device={name!r}: must be auto, cpu, cuda, cuda:N or mps")
    return device


def forward_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context of a training forward pass at ``config.precision``: nothing for fp32;
    ``torch.autocast`` in bfloat16 for bf16, where matrix products run in bfloat16 and
    reductions such as the softmax stay fp32, while weights and optimiser state are fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"setting precision={precision}: autocast needs device cuda or cpu")
    return torch.autocast(device.type, dtype=torch.bfloat16)
