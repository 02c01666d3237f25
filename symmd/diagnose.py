r"""Equivariance error and character spectrum of a model's outputs and layers.

For every output :math:`u` (energy, forces, stress) of every structure,
evaluated on the copies :math:`g_k x` of a quadrature exact to degree
:math:`\ge 2\lambda_{max}`:

- the equivariance error :math:`A` (:func:`symmd.metrics.equivariance_error`;
  forces: RMS over the atoms of the structure);
- the normalized spectrum :math:`B_{(\lambda,\sigma)} / \sum_\beta B_\beta`
  (:func:`symmd.metrics.character_spectrum`, summed over the atoms and
  components of the structure). An exactly equivariant energy is all in
  (0, +1), forces in (1, +1), stress in (0, +1) + (2, +1); weight elsewhere
  is symmetry breaking. The sum runs over :math:`\lambda \le \lambda_{max}`;
  content above it is reported as the ``rest`` fraction
  :math:`1 - \sum_\beta B_\beta / \sum_k w_k \|u_k\|^2`.

Internal features of an eager torch module are captured with forward hooks on
the layers named in ``layers`` (outputs whose first axis is atoms, edges or
structures of the batch, identical in order across rotated copies) and get
the same spectrum.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional, Sequence, Union

import ase
import numpy as np
import torch

from . import metrics, o3
from .models import evaluate_rotated, load

__all__ = ["diagnose", "Diagnosis"]

_KIND = {"energy": "scalar", "forces": "vector", "stress": "rank2"}


@dataclasses.dataclass
class Diagnosis:
    """Result of :func:`diagnose`.

    ``properties[name] = {"error": [A per structure], "spectrum":
    {(lam, sigma): [fraction per structure]}, "rest": [fraction]}``;
    errors in the units of the output (eV, eV/A, eV/A^3; arbitrary for layers).
    """

    quadrature: o3.Quadrature
    max_lambda: int
    properties: dict

    def to_dict(self) -> dict:
        """JSON-ready form (``"lam,sigma"`` keys; see ``docs/API.md``)."""
        q = self.quadrature
        return {
            "quadrature": {"name": q.name, "size": len(q), "degree": q.degree},
            "max_lambda": self.max_lambda,
            "properties": {
                name: {
                    "error": [float(x) for x in entry["error"]],
                    "spectrum": {f"{lam},{sigma}": [float(x) for x in v] for (lam, sigma), v in entry["spectrum"].items()},
                    "rest": [float(x) for x in entry["rest"]],
                }
                for name, entry in self.properties.items()
            },
        }

    def to_json(self, path) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)

    def table(self) -> str:
        """A plain-text summary: mean error and mean spectrum per property."""
        lines = [f"quadrature {self.quadrature.name} ({len(self.quadrature)} elements, degree {self.quadrature.degree})"]
        sectors = [(lam, s) for lam in range(self.max_lambda + 1) for s in (1, -1)]
        header = f"{'property':<22}{'A (mean)':>12}  " + " ".join(f"{lam}{'+' if s > 0 else '-'}".rjust(8) for lam, s in sectors)
        lines.append(header)
        for name, entry in self.properties.items():
            fr = " ".join(f"{np.mean(entry['spectrum'][k]):8.2e}" for k in sectors)
            lines.append(f"{name:<22}{np.mean(entry['error']):12.4e}  {fr}")
        return "\n".join(lines)

    def plot(self, path) -> None:
        """Spectra per property: mean line, faint per-structure lines (sigma=+1
        solid, sigma=-1 dashed), log scale, saved to ``path``."""
        plt = _pyplot()
        names = list(self.properties)
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
        lams = np.arange(self.max_lambda + 1)
        for ax, name in zip(axes[0], names):
            spec = self.properties[name]["spectrum"]
            for sigma, style, color in ((1, "-", "C0"), (-1, "--", "C3")):
                values = np.array([spec[(lam, sigma)] for lam in lams]).clip(1e-16)  # [lam, structures]
                ax.plot(lams, values, style, color=color, alpha=0.15, lw=0.8)
                ax.plot(lams, values.mean(axis=1), style, color=color, lw=2, label=f"sigma={sigma:+d}")
            ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("lambda")
            ax.set_xticks(lams)
        axes[0][0].set_ylabel("B / sum B")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'symmd[plot]'") from error
    return plt


def _per_structure(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype, device=x.device).index_add(0, index, x)


def _summarize(u, q, kind, max_lambda, index, n):
    """Error and spectrum fractions per structure for stacked responses."""
    err = metrics.equivariance_error(u, q, kind)
    spec = metrics.character_spectrum(u, q, max_lambda, kind=kind)
    n_comp = {"scalar": 0, "vector": 1, "rank2": 2}[kind]
    norm2 = (u.to(torch.float64) ** 2)
    if n_comp:
        norm2 = norm2.sum(dim=tuple(range(norm2.ndim - n_comp, norm2.ndim)))
    norm2 = torch.tensordot(q.weights.to(norm2.device), norm2, dims=1)
    if index is not None:  # per-atom samples -> per structure
        err = _per_structure(err**2, index, n) / _per_structure(torch.ones_like(err), index, n)
        err = err.sqrt()
        spec = {k: _per_structure(v, index, n) for k, v in spec.items()}
        norm2 = _per_structure(norm2, index, n)
    total = sum(spec.values())
    scale = torch.where(total > 0, total, torch.ones_like(total))
    return {
        "error": err.cpu().numpy().reshape(-1),
        "spectrum": {k: (v / scale).cpu().numpy().reshape(-1) for k, v in spec.items()},
        "rest": (1 - total / torch.where(norm2 > 0, norm2, torch.ones_like(norm2))).cpu().numpy().reshape(-1),
    }


def diagnose(
    model,
    structures: Union[ase.Atoms, Sequence[ase.Atoms]],
    *,
    quadrature: Union[None, int, o3.Quadrature] = None,
    max_lambda: int = 6,
    properties: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
) -> Diagnosis:
    """Equivariance error and character spectrum of ``model`` on ``structures``.

    Parameters
    ----------
    model: anything :func:`symmd.models.load` accepts.
    structures: one ``ase.Atoms`` or a list.
    quadrature: a Quadrature, a degree, or None for ``quadrature(2 * max_lambda)``.
    max_lambda: the highest order of the spectrum.
    properties: default ``energy``, ``forces`` and (all structures fully
        periodic) ``stress``.
    layers: names of submodules of an eager torch module (``model`` or the
        callable inside its adapter) whose outputs get a spectrum too; one
        structure at a time.
    """
    adapter = load(model)
    frames = [structures] if isinstance(structures, ase.Atoms) else list(structures)
    if not frames:
        raise ValueError("no structures given: pass an ase.Atoms or a non-empty list")
    if quadrature is None:
        quadrature = 2 * max_lambda
    q = quadrature if isinstance(quadrature, o3.Quadrature) else o3.quadrature(int(quadrature))
    if properties is None:
        properties = ["energy", "forces"] + (["stress"] if all(f.pbc.all() for f in frames) else [])
    unknown = [p for p in properties if p not in _KIND]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; choose among {list(_KIND)}")
    captured: dict[str, list] = {}
    handles = _hooks(adapter, layers, captured, len(frames))
    try:
        out = evaluate_rotated(adapter, frames, q, properties, batch_size)
    finally:
        for handle in handles:
            handle.remove()
    n = len(frames)
    index = torch.repeat_interleave(torch.arange(n), torch.tensor([len(f) for f in frames])).to(out["energy"].device)
    result = {}
    for name in properties:
        u = out[name]
        per_atom = name == "forces"
        result[name] = _summarize(u, q, _KIND[name], max_lambda, index if per_atom else None, n)
    for name, chunks in captured.items():
        # rows are grouped by copy (atoms, edges or structures of one copy are
        # contiguous), so each copy is one slice; all channels are components
        feats = torch.cat(chunks).detach().to(torch.float64).reshape(len(q), -1)
        spec = {k: float(v.sum()) for k, v in metrics.character_spectrum(feats, q, max_lambda).items()}
        total = sum(spec.values()) or 1.0
        norm2 = float(torch.tensordot(q.weights, (feats**2).sum(1), dims=1)) or 1.0
        spread = metrics.equivariance_error(feats, q, "scalar")  # invariance spread per channel
        result[f"layer:{name}"] = {
            "error": np.array([float(spread.pow(2).mean().sqrt())]),
            "spectrum": {k: np.array([v / total]) for k, v in spec.items()},
            "rest": np.array([1 - total / norm2]),
        }
    return Diagnosis(q, max_lambda, result)


def _hooks(adapter, layers, captured, n_structures):
    if not layers:
        return []
    module = getattr(adapter, "fn", None)
    if not isinstance(module, torch.nn.Module):
        raise TypeError("layers=... needs an eager torch.nn.Module model (forward hooks)")
    if n_structures != 1:
        raise ValueError("layer spectra are taken one structure at a time; pass a single structure")
    named = dict(module.named_modules())
    handles = []
    for name in layers:
        if name not in named:
            raise ValueError(f"the model has no layer {name!r}; its layers are {sorted(k for k in named if k)}")

        def hook(mod, args, output, name=name):
            value = output[0] if isinstance(output, (tuple, list)) else output
            captured.setdefault(name, []).append(value)

        handles.append(named[name].register_forward_hook(hook))
    return handles
