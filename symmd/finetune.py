r"""Fine-tune the readout of a model with an equivariance penalty.

The minimum inductive bias at zero inference cost (arXiv 2603.24638, Fig. 5):
retrain only some parameters (by default the readout: for PET the energy and
non-conservative heads and last layers) of an unconstrained model with

.. math:: L = L_\mu + \gamma L_\sigma ,

- :math:`L_\mu = \sum_p \mathrm{MSE}_p / s_p^2`: mean squared error against the
  labels of the energy per atom, the forces, the stress (when labelled) and the
  non-conservative forces/stress (against the force/stress labels) when the
  model has them;
- :math:`L_\sigma = \sum_p \overline{\widehat{A^2_p}} / (c_p s_p^2)`: the
  unbiased estimate of :math:`A^2` (:func:`symmd.metrics.sample_error`: the
  sample variance, denominator :math:`m - 1`, of the back-transformed responses
  of ``m = rotations`` fresh Haar-random O(3) draws per structure and step),
  averaged over structures (energy, divided by :math:`N^2`: per atom) or atoms
  (forces), and divided by the :math:`c_p` scalar components (1, 3, 9) so that
  it compares with a per-component MSE.

:math:`s_p^2` is the variance of the labels of ``p`` over the training set (of
the model's own initial predictions with ``labels=False``), so that one
:math:`\gamma` weighs every output alike. The rotated copies and the unrotated
one (for :math:`L_\mu`) go through :func:`symmd.models.evaluate_rotated` in one
batched call with the autograd graph kept (forces by a double backward).

Labels are read by :func:`read_labels` (ASE's and metatrain's default names:
``energy``, ``forces``, ``stress`` or ``virial``).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any, Optional, Union

import ase
import numpy as np
import torch

from . import metrics
from ._labels import read_labels, stack_labels
from .models import Adapter, CallableAdapter, evaluate_rotated, load, quiet_torchscript
from .o3 import Quadrature, quadrature, random_o3

__all__ = ["DEFAULT_TRAINABLE", "FinetuneResult", "equivariance_penalty", "finetune", "read_labels"]

#: glob patterns of the parameters trained by default: PET's heads and last layers
DEFAULT_TRAINABLE = ("*heads.*", "*last_layers.*")
_NC = {"non_conservative_force": "forces", "non_conservative_forces": "forces"}
_NC_STRESS = "non_conservative_stress"
_ALLOWED = {"scalar": [(0, 1)], "vector": [(1, 1)], "rank2": [(0, 1), (2, 1)]}


@dataclasses.dataclass
class FinetuneResult:
    """One fine-tuning run: ``gamma``, the fine-tuned eager ``model``,
    ``history`` (per epoch: ``L_mu``, ``L_sigma``), ``metrics`` (the JSON
    written to ``out``) and ``paths`` of the files written."""

    gamma: float
    model: torch.nn.Module
    history: list
    metrics: dict
    paths: dict


def _outputs(adapter: Adapter, label_names, frames) -> dict[str, tuple[str, str]]:
    """``{response name: (label name, kind)}`` of the outputs in the loss."""
    periodic = all(bool(a.pbc.all()) for a in frames)
    out = {"energy": ("energy", "scalar"), "forces": ("forces", "vector")}
    if "stress" in label_names and periodic:
        out["stress"] = ("stress", "rank2")
    for name in adapter.declared_outputs():
        if name in _NC:
            out[name] = ("forces", "vector")
        elif name == _NC_STRESS and "stress" in out:
            out[name] = ("stress", "rank2")
    return out


def _per_atom(value: torch.Tensor, name: str, n_atoms: torch.Tensor) -> torch.Tensor:
    """Energy per atom for the energy, the value itself otherwise."""
    return value / n_atoms.to(value) if name == "energy" else value


def _sigma(resp, q: Quadrature, outputs, n_atoms, scales) -> torch.Tensor:
    """:math:`L_\\sigma` from the responses ``resp[name] [m, ...]`` to ``q``."""
    total = torch.zeros((), dtype=torch.float64, device=n_atoms.device)
    for name, (label, kind) in outputs.items():
        a2, _ = metrics.sample_error(resp[name], q, kind)
        if name == "energy":
            a2 = a2 / n_atoms.to(a2) ** 2
        total = total + a2.mean() / (3 ** metrics.COMPONENT_AXES[kind] * scales[label])
    return total


def equivariance_penalty(
    model,
    structures,
    rotations: Quadrature,
    properties: Sequence[str] = ("energy", "forces"),
    scales: Optional[dict] = None,
) -> torch.Tensor:
    """:math:`L_\\sigma` of ``model`` on ``structures`` for the given draws.

    ``rotations``: ``m >= 2`` O(3) elements (e.g. ``symmd.o3.random_o3(m,
    rng)``); ``properties``: among energy, forces, stress; ``scales``:
    variance per property (default 1). Returns a float64 scalar that keeps
    the autograd graph with respect to the model's parameters.
    """
    adapter = load(model)
    frames = [structures] if isinstance(structures, ase.Atoms) else list(structures)
    kinds = {"energy": "scalar", "forces": "vector", "stress": "rank2"}
    outputs = {p: (p, kinds[p]) for p in properties}
    resp = evaluate_rotated(adapter, frames, rotations, list(outputs), differentiable=True)
    n_atoms = torch.tensor([len(a) for a in frames], device=adapter.device)
    return _sigma(resp, rotations, outputs, n_atoms, scales or dict.fromkeys(properties, 1.0))


def _losses(adapter, frames, labels, index, outputs, scales, q: Quadrature, with_mu: bool):
    """``(L_mu, L_sigma)`` for the structures ``index``: one batched call on the
    unrotated copy and the ``len(q)`` rotated ones."""
    batch = [frames[i] for i in index]
    rot = torch.cat([torch.eye(3, dtype=torch.float64)[None], q.rotations])
    resp = evaluate_rotated(adapter, batch, rot, list(outputs), differentiable=True)
    n_atoms = torch.tensor([len(a) for a in batch], device=adapter.device)
    l_sigma = _sigma({k: v[1:] for k, v in resp.items()}, q, outputs, n_atoms, scales)
    l_mu = torch.zeros((), dtype=torch.float64, device=adapter.device)
    if with_mu:
        for name, (label, _) in outputs.items():
            ref = stack_labels(labels[label], index, adapter.device)
            if label == "energy":
                ref = ref / n_atoms.to(ref)
            pred = _per_atom(resp[name][:1], name, n_atoms)[0].reshape(ref.shape)
            l_mu = l_mu + ((pred - ref) ** 2).mean() / scales[label]
    return l_mu, l_sigma


def _scales(adapter, frames, labels, outputs) -> dict[str, float]:
    """Variance of each label over the training set (per atom for the energy);
    without labels, of the model's own predictions."""
    values = dict(labels)
    if not values:
        names = [p for p in ("energy", "forces", "stress") if p in outputs]
        resp = evaluate_rotated(adapter, frames, torch.eye(3), names)
        values = {"energy": list(resp["energy"][0].cpu().numpy())}
        starts = np.cumsum([0] + [len(a) for a in frames])
        if "forces" in resp:
            f = resp["forces"][0].cpu().numpy()
            values["forces"] = [f[a:b] for a, b in zip(starts[:-1], starts[1:])]
        if "stress" in resp:
            values["stress"] = list(resp["stress"][0].cpu().numpy())
    out = {}
    for name, vals in values.items():
        x = stack_labels(vals, range(len(vals)), "cpu")
        if name == "energy":
            x = x / torch.tensor([len(a) for a in frames], dtype=x.dtype)
        var = float(x.var()) if x.numel() > 1 else 0.0
        out[name] = var if var > 1e-12 else max(float((x * x).mean()), 1.0)
    return out


def _select(module: torch.nn.Module, trainable: Sequence[str]) -> list[str]:
    if isinstance(trainable, str):
        trainable = [trainable]
    names = [name for name, _ in module.named_parameters()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, pat) for pat in trainable)]
    if not chosen:
        raise ValueError(
            f"no parameter matches trainable={list(trainable)}; the model's parameters are {names}"
        )
    for name, param in module.named_parameters():
        param.requires_grad_(name in chosen)
    return chosen


def _load(checkpoint) -> tuple[torch.nn.Module, bool]:
    """``(eager module, is_metatrain)`` from a ``.ckpt`` path or a module."""
    if isinstance(checkpoint, torch.nn.Module):
        is_mtt = all(callable(getattr(checkpoint, n, None)) for n in ("export", "get_checkpoint"))
        return copy.deepcopy(checkpoint), is_mtt
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a path to a metatrain checkpoint (.ckpt) or a torch module, "
            f"got {type(checkpoint).__name__}"
        )
    path = os.fspath(checkpoint)
    if not path.endswith(".ckpt"):
        raise ValueError(
            f"checkpoint={path!r} is not a metatrain checkpoint: an exported model (.pt) is "
            "TorchScript and cannot be trained; pass the .ckpt it was exported from"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    with quiet_torchscript():
        try:
            from metatrain.utils.io import load_model
        except ImportError as error:
            raise ImportError(
                f"fine-tuning the checkpoint {path!r} needs metatrain: pip install 'symmd[train]'"
            ) from error
        return load_model(path), True


def _evaluate(adapter, frames, labels, outputs, degree: int) -> dict[str, Any]:
    """Held-out MAE and equivariance error A (rms) with its spectrum summary."""
    q = quadrature(degree)
    n_atoms = torch.tensor([len(a) for a in frames], device=adapter.device)
    raw = evaluate_rotated(adapter, frames, torch.eye(3), list(outputs))
    resp = evaluate_rotated(adapter, frames, q, list(outputs))
    out: dict[str, Any] = {}
    for name, (label, kind) in outputs.items():
        entry: dict[str, Any] = {}
        _, a = metrics.twirl_and_error(resp[name], q, kind)
        if name == "energy":
            entry["A_rms"] = float(a.pow(2).mean().sqrt())
            a = a / n_atoms.to(a)
        pred = _per_atom(raw[name], name, n_atoms)[0]
        key = "A_per_atom_rms" if name == "energy" else "A_rms"
        entry[key] = float(a.pow(2).mean().sqrt())
        entry["prediction_rms"] = float(pred.pow(2).mean().sqrt())
        if label in labels:
            ref = stack_labels(labels[label], range(len(frames)), adapter.device)
            ref = ref / n_atoms.to(ref) if label == "energy" else ref
            entry["mae"] = float((pred.reshape(ref.shape) - ref).abs().mean())
            entry["label_rms"] = float(ref.pow(2).mean().sqrt())
        if kind == "vector":
            entry["A_over_rms"] = entry["A_rms"] / max(entry["prediction_rms"], 1e-300)
        spec = metrics.character_spectrum(resp[name], q, degree // 2, kind)
        total = float(metrics.mean_square(resp[name], q, kind).sum())
        inside = sum(float(spec[b].sum()) for b in _ALLOWED[kind])
        entry["weight_outside"] = max(0.0, 1.0 - inside / total) if total > 0 else 0.0
        out[name] = entry
    units = {"energy": "eV/atom (mae), eV (A_rms)", "forces": "eV/A", "stress": "eV/A^3"}
    return {
        "quadrature": {"name": q.name, "size": len(q), "degree": q.degree},
        "units": units,
        **out,
    }


def _check_gammas(gamma) -> list[float]:
    many = isinstance(gamma, (list, tuple, np.ndarray))
    gammas = list(gamma) if many else [gamma]
    for g in gammas:
        if isinstance(g, bool) or not isinstance(g, (int, float, np.floating)) or not g >= 0:
            raise ValueError(f"gamma must be a number >= 0 (or a list of them), got {g!r}")
    return [float(g) for g in gammas]


def _positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def finetune(
    checkpoint,
    train,
    *,
    gamma: Union[float, Sequence[float]],
    valid=None,
    trainable: Sequence[str] = DEFAULT_TRAINABLE,
    rotations: int = 2,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 8,
    seed: Optional[int] = 0,
    out: Union[str, os.PathLike, None] = None,
    labels: bool = True,
    degree: int = 7,
    progress: bool = True,
) -> Union[FinetuneResult, list[FinetuneResult]]:
    """Retrain the ``trainable`` parameters with :math:`L_\\mu + \\gamma L_\\sigma`.

    Parameters
    ----------
    checkpoint: a metatrain checkpoint (``.ckpt``, loaded eagerly) or an eager
        torch module (a metatrain model, or a callable with the batched
        signature of :class:`symmd.models.CallableAdapter`); never modified.
    train, valid: extxyz paths or lists of ``ase.Atoms`` with labels (see the
        module docstring for the names read). ``valid=None``: the metrics are
        measured on ``train``.
    gamma: weight of the penalty (>= 0), or a list: one run per value, each
        from the original weights.
    trainable: glob patterns (:func:`fnmatch.fnmatchcase`) of the parameter
        names to train; every other parameter is frozen.
    rotations: Haar-random O(3) draws per structure and step (>= 2).
    epochs, lr, batch_size: Adam (in the model's dtype and device), structures
        per step, shuffled with ``seed`` (which also seeds torch and the draws).
    out: folder; per gamma ``gamma_<g>/`` with ``result.json`` and, for a
        metatrain model, ``model.ckpt`` and the exported ``model.pt``; with
        several gammas ``summary.json`` and ``tradeoff.png``.
    labels: ``False`` trains on :math:`L_\\sigma` alone (no labels needed).
    degree: quadrature degree for the held-out equivariance error (>= 7 is
        recommended: A is a second moment).

    Returns one :class:`FinetuneResult`, or a list of them for a list of gammas.
    """
    gammas = _check_gammas(gamma)
    _positive("rotations", rotations, 2)
    _positive("epochs", epochs, 0)
    _positive("batch_size", batch_size)
    _positive("degree", degree)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    frames, train_labels = read_labels(train, "the training set", labels)
    if valid is None:
        valid_frames, valid_labels = frames, train_labels
    else:
        valid_frames, valid_labels = read_labels(valid, "the validation set", False)
    results = []
    for g in gammas:
        results.append(
            _run(checkpoint, frames, train_labels, valid_frames, valid_labels, g, trainable,
                 rotations, epochs, lr, batch_size, seed, out, labels, degree, progress)
        )  # fmt: skip
    if out is not None and len(results) > 1:
        from ._plotting import tradeoff_figure

        summary = [r.metrics for r in results]
        path = pathlib.Path(out)
        (path / "summary.json").write_text(json.dumps(summary, indent=1))
        tradeoff_figure(summary, path / "tradeoff.png")
    return results if isinstance(gamma, (list, tuple, np.ndarray)) else results[0]


def _run(checkpoint, frames, labels, valid_frames, valid_labels, gamma, trainable, rotations,
         epochs, lr, batch_size, seed, out, with_labels, degree, progress) -> FinetuneResult:  # fmt: skip
    from tqdm import tqdm

    module, is_mtt = _load(checkpoint)
    dtype = next(module.parameters()).dtype
    # (wrapping a metatrain model in an AtomisticModel freezes every parameter)
    adapter = load(module) if is_mtt else CallableAdapter(module, dtype=dtype)
    names = _select(module, trainable)
    params = [p for n, p in module.named_parameters() if n in names]
    if progress:
        count = sum(p.numel() for p in params)
        print(f"gamma={gamma:g}: training {len(names)} tensors ({count} parameters): {names}")
    outputs = _outputs(adapter, labels, frames)
    scales = _scales(adapter, frames, labels if with_labels else {}, outputs)
    if seed is not None:
        torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(params, lr=lr)
    n_batches = math.ceil(len(frames) / batch_size)
    history = []
    bar = tqdm(total=epochs * n_batches, disable=not progress, desc=f"gamma={gamma:g}")
    for _ in range(epochs):
        order = rng.permutation(len(frames))
        sums = np.zeros(2)
        for b in range(n_batches):
            index = order[b * batch_size : (b + 1) * batch_size]
            q = random_o3(rotations, rng)
            l_mu, l_sigma = _losses(adapter, frames, labels, index, outputs, scales, q, with_labels)
            optimizer.zero_grad()
            (l_mu + gamma * l_sigma).backward()
            optimizer.step()
            sums += [float(l_mu.detach()), float(l_sigma.detach())]
            bar.update()
            bar.set_postfix(L_mu=f"{sums[0] / (b + 1):.3g}", L_sigma=f"{sums[1] / (b + 1):.3g}")
        history.append({"L_mu": sums[0] / n_batches, "L_sigma": sums[1] / n_batches})
    bar.close()
    measured = _evaluate(adapter, valid_frames, valid_labels, outputs, degree)
    result = {
        "gamma": gamma,
        "trainable": names,
        "epochs": epochs,
        "lr": lr,
        "rotations": rotations,
        "scales": scales,
        "history": history,
        "evaluated_on": "train" if valid_frames is frames else "valid",
        "n_structures": len(valid_frames),
        "metrics": measured,
    }
    paths = _save(module, is_mtt, result, out, gamma) if out is not None else {}
    for param in module.parameters():
        param.requires_grad_(True)
    return FinetuneResult(gamma, module, history, result, paths)


def _save(module, is_mtt: bool, result: dict, out, gamma: float) -> dict:
    folder = pathlib.Path(out) / f"gamma_{gamma:g}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "result.json"}
    if is_mtt:
        ckpt = module.get_checkpoint()
        ckpt["best_model_state_dict"] = ckpt["model_state_dict"]
        paths["checkpoint"] = folder / "model.ckpt"
        torch.save(ckpt, paths["checkpoint"])
        paths["model"] = folder / "model.pt"
        with quiet_torchscript():
            module.export().save(str(paths["model"]))
    else:
        paths["state_dict"] = folder / "state_dict.pt"
        torch.save(module.state_dict(), paths["state_dict"])
    result["paths"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(result, indent=1))
    return paths
