"""Optional dependencies: which extra brings each, and one way to ask for one.

The base install (``pip install mirec``) trains, evaluates, recommends, inspects, compares
and runs experiments. Item indexes, the ONNX export and the HTTP service need packages
that it leaves out; they are imported only where used, through :func:`require`, so a
missing one is one line naming the extra instead of a traceback from module discovery.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mirec.errors import MirecError

EXTRA_OF = {
    "faiss": "ann",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "mlflow": "track",
    "tensorboard": "track",
    "optuna": "tune",
    "sklearn": "tune",
}
"""The top-level module of each optional dependency, and the extra of pyproject.toml that
installs it."""


class MissingExtra(MirecError):
    """A feature whose optional dependency is not installed."""


def missing_extra_message(purpose: str, module: str) -> str:
    """The one line that says what to install for ``purpose`` (``"mirec serve"``)."""
    extra = EXTRA_OF.get(module.split(".")[0], "")
    install = f"pip install 'mirec[{extra}]'" if extra else f"pip install {module}"
    where = f"the {extra} extra" if extra else module
    return f"{purpose} needs {where}: {install} (no module named {module!r})"


def require(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or :class:`MissingExtra` with the line to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # only the module asked for, or one it needs, counts as missing; any other import
        # error inside it is a real bug and keeps its traceback
        name = getattr(err, "name", None) or module
        if name.split(".")[0] not in (module.split(".")[0], *EXTRA_OF):
            raise
        raise MissingExtra(missing_extra_message(purpose, name)) from None
