r"""The losses and held-out metrics of :mod:`symmd.finetune`.

:math:`L_\mu` (mean squared error per output over its label variance),
:math:`L_\sigma` (the unbiased estimate of :math:`A^2` over random O(3) draws,
per output, over its label variance and its number of components) and the
held-out MAE / :math:`A` / weight outside the allowed sector written to
``result.json``. See :mod:`symmd.finetune` for the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import ase
import numpy as np
import torch

from . import metrics
from ._labels import stack_labels
from .models import Adapter, evaluate_rotated, load
from .o3 import Quadrature, quadrature

_NC = {"non_conservative_force": "forces", "non_conservative_forces": "forces"}
_NC_STRESS = "non_conservative_stress"
_ALLOWED = {"scalar": [(0, 1)], "vector": [(1, 1)], "rank2": [(0, 1), (2, 1)]}


def outputs_of(adapter: Adapter, label_names, frames) -> dict[str, tuple[str, str]]:
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


def _reoriented(frames, labels, index, orient: np.ndarray):
    """The structures ``index``, each turned by its own ``orient[b]`` (positions
    and cell ``r -> r R^T``), and their labels turned alike."""
    batch: list = []
    turned: dict[str, list] = {name: [] for name in labels}
    for b, i in enumerate(index):
        rot = orient[b]
        atoms = frames[i].copy()
        atoms.calc = None
        atoms.positions = atoms.positions @ rot.T
        if atoms.cell.rank == 3:
            atoms.cell = atoms.cell.array @ rot.T
        batch.append(atoms)
        for name, values in labels.items():
            value = np.asarray(values[i], dtype=float)
            if name == "forces":
                value = value @ rot.T
            elif name == "stress":
                value = rot @ value @ rot.T
            turned[name].append(value)
    return batch, turned


def losses(adapter, frames, labels, index, outputs, scales, q: Quadrature, with_mu: bool,
           augment: bool = False, orient: Optional[np.ndarray] = None):  # fmt: skip
    """``(L_mu, L_sigma)`` for the structures ``index`` in one batched call.

    ``augment=False``: :math:`L_\\mu` on the unrotated copy (evaluated with
    the ``len(q)`` rotated ones); ``True``: on every rotated copy, brought back
    to the input frame (data augmentation: its mean over draws is the error of
    the twirl plus :math:`A^2`), with no unrotated copy. ``orient``
    (``[len(index), 3, 3]``, with ``augment`` only): each structure is first
    turned by its own O(3) element, so that the batch's draws
    :math:`g_j R_b` differ between structures.
    """
    if orient is not None:
        if not augment:
            raise ValueError("orient needs augment=True (the unrotated copy is the reference)")
        batch, labels = _reoriented(frames, labels, index, orient)
        index = range(len(batch))
    else:
        batch = [frames[i] for i in index]
    rot = (
        q.rotations
        if augment
        else torch.cat([torch.eye(3, dtype=torch.float64)[None], q.rotations])
    )
    resp = evaluate_rotated(adapter, batch, rot, list(outputs), differentiable=True)
    n_atoms = torch.tensor([len(a) for a in batch], device=adapter.device)
    rotated = resp if augment else {k: v[1:] for k, v in resp.items()}
    l_sigma = _sigma(rotated, q, outputs, n_atoms, scales)
    l_mu = torch.zeros((), dtype=torch.float64, device=adapter.device)
    if with_mu:
        for name, (label, kind) in outputs.items():
            ref = stack_labels(labels[label], index, adapter.device)
            if label == "energy":
                ref = ref / n_atoms.to(ref)
            if augment:
                pred = _per_atom(metrics.back_transform(resp[name], q, kind), name, n_atoms)
            else:
                pred = _per_atom(resp[name][:1], name, n_atoms)
            l_mu = l_mu + ((pred - ref.reshape(pred.shape[1:])) ** 2).mean() / scales[label]
    return l_mu, l_sigma


def scales_of(adapter, frames, labels, outputs) -> dict[str, float]:
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


def evaluate(adapter, frames, labels, outputs, degree: int) -> dict[str, Any]:
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
        if all(b in spec for b in _ALLOWED[kind]):
            inside = sum(float(spec[b].sum()) for b in _ALLOWED[kind])
            entry["weight_outside"] = max(0.0, 1.0 - inside / total) if total > 0 else 0.0
        else:  # the rule cannot resolve the allowed sectors (stress: lambda 2 needs degree 4)
            entry["weight_outside"] = None
        out[name] = entry
    units = {"energy": "eV/atom (mae), eV (A_rms)", "forces": "eV/A", "stress": "eV/A^3"}
    return {
        "quadrature": {"name": q.name, "size": len(q), "degree": q.degree},
        "units": units,
        **out,
    }
