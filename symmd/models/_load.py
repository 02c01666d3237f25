"""``load``: from whatever the user has to an adapter.

Accepted: an exported metatomic model file (``.pt``, TorchScript); a
metatrain checkpoint (``.ckpt``, loaded eagerly with metatrain, so that forward
hooks reach its layers); a metatomic ``AtomisticModel``; an eager metatrain
model (anything with ``export()`` and ``requested_neighbor_lists()``); an ASE
calculator; a torch callable with the batched signature of
:class:`~symmd.models.CallableAdapter`; an adapter.

Trust: a ``.ckpt`` is read by metatrain with full pickle
(``torch.load(weights_only=False)``), which can run arbitrary code, and a
``.pt`` is TorchScript, which runs the code it contains. Load only files
from sources you trust.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Optional, Union

import torch
from ase.calculators.calculator import BaseCalculator

from ._adapters import Adapter, AseAdapter, CallableAdapter, MetatomicAdapter

__all__ = ["load", "quiet_torchscript"]


@contextlib.contextmanager
def quiet_torchscript():
    """Hide torch's "`torch.jit.*` is deprecated" warnings, which metatomic's
    import and model loading trigger on every run (nothing the user can act on)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def _first_line(error: Exception) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""


def _load_checkpoint(path: str):
    """An eager ``AtomisticModel`` from a metatrain checkpoint (unpickled by
    metatrain with ``weights_only=False``: trusted files only)."""
    try:
        with quiet_torchscript():
            from metatrain.utils.io import load_model
    except ImportError as error:
        raise ImportError(
            f"reading the metatrain checkpoint {path!r} needs metatrain: "
            "pip install 'symmd[train]' (or export it with `mtt export` and pass the .pt)"
        ) from error
    try:
        model = load_model(path)
    except Exception as error:  # metatrain raises many kinds for a foreign file
        raise ValueError(
            f"{path!r} is not a metatrain checkpoint ({type(error).__name__}: {_first_line(error)})"
        ) from error
    return model.export()


def _load_path(path: Union[str, os.PathLike]):
    with quiet_torchscript():
        from metatomic.torch import load_atomistic_model

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if path.endswith(".ckpt"):
        return _load_checkpoint(path)
    try:
        with quiet_torchscript():
            return load_atomistic_model(path)
    except Exception as error:  # torch raises many kinds for a foreign file
        raise ValueError(
            f"{path!r} is not an exported metatomic model ({type(error).__name__}: "
            f"{_first_line(error)}); export it with metatomic.torch.AtomisticModel.save "
            "or `mtt export`, or pass a metatrain checkpoint as a .ckpt file"
        ) from error


def _is_metatrain_model(model) -> bool:
    return isinstance(model, torch.nn.Module) and all(
        callable(getattr(model, name, None)) for name in ("export", "requested_neighbor_lists")
    )


def load(
    model, device=None, dtype: Optional[torch.dtype] = None, non_conservative: bool = False
) -> Adapter:
    """Wrap ``model`` in an adapter that evaluates batches of rotated copies.

    ``model`` may be: a path to an exported metatomic model (``.pt``) or to a
    metatrain checkpoint (``.ckpt``, eager, needs metatrain); a metatomic
    ``AtomisticModel`` or an eager metatrain model; an ASE calculator
    (sequential fallback); a torch module or callable with the batched
    signature of :class:`CallableAdapter`; or an adapter (returned as is).
    Model files run code when loaded (a ``.ckpt`` is unpickled, a ``.pt``
    is TorchScript): load only files you trust.
    ``dtype`` applies to callables (default float64); metatomic models run in
    their own dtype. ``non_conservative=True`` takes forces (and stress) from
    the model's direct outputs instead of autograd.
    """
    if isinstance(model, Adapter):
        return model
    kwargs = dict(device=device, dtype=dtype, non_conservative=non_conservative)
    if isinstance(model, (str, os.PathLike)):
        return MetatomicAdapter(_load_path(model), **kwargs)
    with quiet_torchscript():
        from metatomic.torch import is_atomistic_model

    if isinstance(model, torch.nn.Module) and is_atomistic_model(model):
        return MetatomicAdapter(model, **kwargs)
    if _is_metatrain_model(model):
        return MetatomicAdapter(model.export(), **kwargs)
    if isinstance(model, BaseCalculator):
        if non_conservative:
            raise ValueError("non_conservative=True does not apply to an ASE calculator")
        return AseAdapter(model, **kwargs)
    if callable(model):
        return CallableAdapter(model, **kwargs)
    raise TypeError(
        f"model must be a path to a metatomic model or metatrain checkpoint, an "
        f"AtomisticModel, an ASE calculator or a torch callable, got {type(model).__name__}"
    )
