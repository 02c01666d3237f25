r"""Equivariance error and character spectrum of a model's outputs and layers.

For every output :math:`u` of every structure, evaluated on the copies
:math:`g_k x` of a quadrature (default: exact to degree
:math:`2\lambda_{max}`, so that a response band-limited to
:math:`\lambda_{max}` has exact sector weights):

- the equivariance error :math:`A` (:func:`symmd.metrics.equivariance_error`;
  RMS over the atoms and channels of the structure), in the units of the
  output;
- the normalized spectrum :math:`B_{(\lambda,\sigma)} / \langle\|u\|^2\rangle_G`
  (:func:`symmd.metrics.character_spectrum`, summed over the atoms, channels
  and components of the structure). An exactly equivariant energy is all in
  (0, +1), forces in (1, +1), stress in (0, +1) + (2, +1); weight elsewhere
  is symmetry breaking. The normalization is the full
  :math:`\langle\|u\|^2\rangle_G = \sum_k w_k \|u_k\|^2` (Parseval), so the
  content above :math:`\lambda_{max}` is its own entry, ``above``
  :math:`= 1 - \sum_\beta B_\beta / \langle\|u\|^2\rangle_G`, and symmetry
  breaking above :math:`\lambda_{max}` stays visible;
- for the physical outputs, the predicted twirl residual of the rules of
  degree :math:`L \le` (degree - 1)/2 (:func:`symmd.metrics.predict_residuals`).

Outputs: energy, forces, stress (fully periodic structures), and every extra
output the model declares (non-conservative forces and stress, features,
last-layer features, ...; see :mod:`symmd.models._outputs`). Extra outputs
without components are taken as invariant channels, so their error is their
spread over orientations. Internal layers of an eager torch module come from
forward hooks (:mod:`symmd._layers`), one structure at a time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Optional, Union

import ase
import numpy as np
import torch

from . import metrics, o3
from ._accuracy import compare, model_errors
from ._layers import LayerCapture, drop_padding
from ._plotting import error_figure, spectrum_figure
from .models import EQUIVARIANT_SECTORS, evaluate_rotated, load
from .recommend import predict_residuals, trusted_degrees

__all__ = ["diagnose", "Diagnosis"]

#: outputs that get predicted twirl residuals (energies are summed into energy)
_PHYSICAL = tuple(name for name in EQUIVARIANT_SECTORS if name != "energies")
#: declared outputs left out by default (metatrain's internal bookkeeping)
_INTERNAL = "mtt::aux::"
_BLOCK = 4_000_000  # float64 values per block when reducing wide outputs


@dataclasses.dataclass
class Diagnosis:
    """Result of :func:`diagnose`.

    ``properties[name]`` holds, per structure (arrays ``[S]``): ``"error"``
    (:math:`A`, units of the output, RMS over the atoms and channels of the
    structure; NaN where symmd cannot back-transform, i.e. spherical
    outputs), ``"error_rows"`` (:math:`A` per atom or per structure),
    ``"spectrum"`` ``{(lam, sigma): B / <||u||^2>_G}`` and ``"above"`` (the
    fraction above ``max_lambda``; with the sectors it sums to one),
    ``"kind"``, and for the physical outputs ``"residual"`` ``{L: predicted
    twirl residual}``. Rank-2 outputs also appear as ``name[lambda=0]``,
    ``name[lambda=2]`` (and ``name[lambda=1]`` when an antisymmetric part
    exists). When the structures carry reference labels, ``"abs_error"``
    (per structure for energy and stress, per atom for forces) and
    ``"accuracy"`` (medians and their ratio). Layers are named
    ``layer:<module path>``.
    """

    quadrature: o3.Quadrature
    max_lambda: int
    properties: dict

    def to_dict(self) -> dict:
        """JSON-ready form: ``{"quadrature": {"name", "size", "degree"},
        "max_lambda", "properties": {name: {"kind", "error": [per structure],
        "spectrum": {"lam,sigma": [fraction per structure], "above": [...]},
        "residual": {"L": [...]}, "mean": {...}, "std": {...},
        "abs_error": [...], "accuracy": {...}}}}`` (``mean`` and ``std`` over
        structures of the error and of every sector)."""
        q = self.quadrature

        def floats(x):
            return [float(v) for v in np.asarray(x).reshape(-1)]

        props = {}
        for name, entry in self.properties.items():
            spectrum = {
                f"{lam},{sigma}": floats(v) for (lam, sigma), v in entry["spectrum"].items()
            }
            spectrum["above"] = floats(entry["above"])
            props[name] = {
                "kind": entry["kind"],
                "error": floats(entry["error"]),
                "spectrum": spectrum,
                "mean": {
                    "error": float(np.mean(entry["error"])),
                    **{k: float(np.mean(v)) for k, v in spectrum.items()},
                },
                "std": {
                    "error": float(np.std(entry["error"])),
                    **{k: float(np.std(v)) for k, v in spectrum.items()},
                },
            }
            if "residual" in entry:
                props[name]["residual"] = {str(k): floats(v) for k, v in entry["residual"].items()}
            if "accuracy" in entry:
                props[name]["abs_error"] = floats(entry["abs_error"])
                props[name]["accuracy"] = {  # nan (an undefined rank statistic) -> null
                    k: None if isinstance(v, float) and np.isnan(v) else v
                    for k, v in entry["accuracy"].items()
                }
        return {
            "quadrature": {"name": q.name, "size": len(q), "degree": q.degree},
            "max_lambda": self.max_lambda,
            "properties": props,
        }

    def to_json(self, path) -> None:
        """Write :meth:`to_dict` to ``path``."""
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)

    def table(self) -> str:
        """Plain text: mean error (with units) and mean spectrum per property,
        the predicted twirl residuals, and the model error beside A."""
        q = self.quadrature
        lines = [f"quadrature {q.name} ({len(q)} elements, degree {q.degree})"]
        sectors = [(lam, s) for lam in range(self.max_lambda + 1) for s in (1, -1)]
        lines.append(
            f"{'property':<34}{'A (mean)':>11} {'unit':<8}"
            + " ".join(f"{lam}{'+' if s > 0 else '-'}".rjust(8) for lam, s in sectors)
            + f"{'>' + str(self.max_lambda):>9}"
        )
        for name, entry in self.properties.items():
            fractions = " ".join(f"{np.mean(entry['spectrum'][k]):8.1e}" for k in sectors)
            shown = name if len(name) <= 33 else name[:30] + "..."
            lines.append(
                f"{shown:<34}{np.mean(entry['error']):11.3e} {unit_of(name):<8}{fractions}"
                f" {np.mean(entry['above']):8.1e}"
            )
        lines.append(
            "columns 'l+'/'l-': fraction of <|u|^2> over orientations in the O(3) irrep of order l, "
            "polar (+) or axial (-); an exact energy lives in 0+, forces in 1+, stress in 0+ and 2+"
        )
        residuals = {n: e["residual"] for n, e in self.properties.items() if e.get("residual")}
        if residuals:
            lines.append(
                "predicted twirl residual of symmd.o3.quadrature(L), RMS, in the unit of the output:"
            )
            for name, res in residuals.items():
                lines.append(
                    f"  {name:<32}" + "  ".join(f"L={L}: {np.mean(v):.2e}" for L, v in res.items())
                )
        labelled = {n: e["accuracy"] for n, e in self.properties.items() if "accuracy" in e}
        if labelled:
            lines.append("model error against the labels beside the equivariance error (medians):")
            for name, acc in labelled.items():
                lines.append(
                    f"  {name:<10} |error| {acc['median_abs_error']:.3e}  A "
                    f"{acc['median_equivariance_error']:.3e} {unit_of(name):<8} ratio {acc['ratio']:.3g}"
                )
                if "spearman" in acc:
                    lines.append(
                        f"  {'':<10} per atom: Spearman(A, |error|) {acc['spearman']:.3f}, ROC-AUC "
                        f"{acc['roc_auc']:.3f} for |error| > {acc['auc_threshold']:g} {unit_of(name)} "
                        f"({acc['n_above']} atoms)"
                    )
        return "\n".join(lines)

    def plot(self, path, title: str = ""):
        """Spectra per property in the style of the paper's Fig. 2: mean line,
        faint per-structure lines, sigma = +1 solid, -1 dashed, log scale,
        the weight above ``max_lambda`` as a grey marker. Returns the figure."""
        spectra = {
            name: {**entry["spectrum"], "above": entry["above"]}
            for name, entry in self.properties.items()
        }
        return spectrum_figure(
            spectra,
            self.max_lambda,
            path,
            title or f"{self.quadrature.name}, {len(self.quadrature)} rotations",
        )

    def plot_errors(self, path, title: str = ""):
        """Distributions of the model error and of A per labelled output (the
        paper's Fig. 2, top): log-spaced histograms, medians as vertical lines.
        Returns the figure; ValueError when no structure carried labels."""
        data = {
            name: (entry["abs_error"], entry["error_rows"])
            for name, entry in self.properties.items()
            if "abs_error" in entry
        }
        if not data:
            raise ValueError(
                "no output has reference labels: give structures with energy/forces/stress "
                "(e.g. an extxyz file read with ase.io.read)"
            )
        return error_figure(data, {n: unit_of(n) for n in data}, path, title)


def unit_of(name: str) -> str:
    """The unit of an output's values (eV, eV/A, eV/A^3), or '' if unknown."""
    base = name.split("[")[0]
    if base in ("energy", "energies"):
        return "eV"
    if base in ("forces", "non_conservative_force", "non_conservative_forces"):
        return "eV/A"
    if base in ("stress", "non_conservative_stress"):
        return "eV/A^3"
    return ""


def _summarize(u, q, kind, max_lambda, rows, n_structures, residual_degrees=()):
    """Error, spectrum and the weight above ``max_lambda`` per structure of ``u [K, R, ...]``, whose row
    ``r`` belongs to structure ``rows[r]``."""
    n_rows = u.shape[1]
    flat = u.reshape(u.shape[0], n_rows, -1)

    def per_structure(x):  # [R] -> [S]
        return torch.zeros(n_structures, dtype=torch.float64).index_add(
            0, rows, x.to(torch.float64).cpu()
        )

    spec = {
        (lam, s): torch.zeros(n_rows, dtype=torch.float64)
        for lam in range(max_lambda + 1)
        for s in (1, -1)
    }
    norm2 = torch.zeros(n_rows, dtype=torch.float64)
    w = q.weights.to(u.device)
    step = max(1, _BLOCK // (flat.shape[0] * n_rows))
    for start in range(0, flat.shape[2], step):  # column blocks: bounded memory for wide layers
        block = flat[:, :, start : start + step].to(torch.float64)
        for key, value in metrics.character_spectrum(block, q, max_lambda).items():
            spec[key] += value.sum(-1).cpu()
        norm2 += torch.tensordot(w, (block * block).sum(-1), dims=1).cpu()
    counts = per_structure(torch.ones(n_rows))
    if kind in metrics.TRANSFORMABLE:
        err = metrics.equivariance_error(u, q, kind).reshape(n_rows, -1).cpu()
        row_error = err.pow(2).mean(1).sqrt()
        error = (per_structure(row_error.pow(2)) / counts).sqrt()
    else:
        row_error = torch.full((n_rows,), float("nan"), dtype=torch.float64)
        error = torch.full((n_structures,), float("nan"), dtype=torch.float64)
    spec = {key: per_structure(value) for key, value in spec.items()}
    total = torch.stack(list(spec.values())).sum(0)
    norm2 = per_structure(norm2)
    scale = torch.where(norm2 > 0, norm2, torch.ones_like(norm2))
    entry = {
        "kind": kind,
        "error": error.numpy(),
        "error_rows": row_error.numpy(),
        "spectrum": {key: (value / scale).numpy() for key, value in spec.items()},
        "above": ((norm2 - total) / scale).numpy(),
    }
    if residual_degrees:
        predicted = predict_residuals(u, q, kind, residual_degrees)
        entry["residual"] = {
            L: (per_structure(r.reshape(n_rows, -1).pow(2).mean(1)) / counts).sqrt().numpy()
            for L, r in predicted.items()
        }
    return entry


def _full_list_counts(out, n_atoms: int) -> list[torch.Tensor]:
    """Per-atom neighbour counts of each full neighbour list the engine built."""
    return [
        torch.bincount(pairs.first.cpu(), minlength=n_atoms)
        for (_, full), pairs in out.pairs.items()
        if full
    ]


def _rows(out, name, n_atoms):
    """Row -> structure map of one response (atoms or structures)."""
    n = len(n_atoms)
    return (
        torch.repeat_interleave(torch.arange(n), n_atoms) if out.per_atom[name] else torch.arange(n)
    )


def _merge(entries: list[dict]) -> dict:
    """Concatenate per-structure entries (one per evaluated structure)."""
    first = entries[0]
    merged = {"kind": first["kind"]}
    for key in ("error", "error_rows", "above"):
        merged[key] = np.concatenate([e[key] for e in entries])
    merged["spectrum"] = {
        b: np.concatenate([e["spectrum"][b] for e in entries]) for b in first["spectrum"]
    }
    if "residual" in first:
        merged["residual"] = {
            L: np.concatenate([e["residual"][L] for e in entries]) for L in first["residual"]
        }
    return merged


def diagnose(
    model,
    structures: Union[ase.Atoms, Sequence[ase.Atoms]],
    *,
    quadrature: Union[None, int, o3.Quadrature] = None,
    max_lambda: int = 6,
    properties: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
    auc_threshold: float = 0.1,
) -> Diagnosis:
    """Equivariance error and character spectrum of ``model`` on ``structures``.

    Parameters
    ----------
    model: anything :func:`symmd.models.load` accepts.
    structures: one ``ase.Atoms`` or a list.
    quadrature: a Quadrature with inversion, a degree, or None for
        ``quadrature(2 * max_lambda)``.
    max_lambda: the highest order of the spectrum.
    properties: default ``energy``, ``forces``, ``stress`` (all structures
        fully periodic) and every extra output the model declares except
        metatrain's internal auxiliaries (``mtt::aux::*``, e.g. cutoff
        statistics), which can be asked for by name.
    layers: names of submodules of an eager torch module (a torch callable, a
        metatrain checkpoint ``.ckpt``; :meth:`Adapter.hook_root`) whose
        outputs get a spectrum too, as ``layer:<name>``.
    batch_size: the most rotated copies per model call.
    auc_threshold: with force labels, the error (eV/A) above which an atom
        counts as wrong for the ROC-AUC of the per-atom A against
        :math:`|F - F_{ref}|` (``accuracy["roc_auc"]``, beside the Spearman
        rank correlation ``accuracy["spearman"]``; :mod:`symmd.ranking`).
    """
    adapter = load(model)
    frames = [structures] if isinstance(structures, ase.Atoms) else list(structures)
    if not frames:
        raise ValueError("no structures given: pass an ase.Atoms or a non-empty list")
    if isinstance(max_lambda, bool) or not isinstance(max_lambda, int) or max_lambda < 0:
        raise ValueError(f"max_lambda must be a non-negative int, got {max_lambda!r}")
    if quadrature is None:
        quadrature = 2 * max_lambda
    q = quadrature if isinstance(quadrature, o3.Quadrature) else o3.quadrature(int(quadrature))
    if properties is None:
        periodic = all(f.pbc.all() for f in frames)
        properties = ["energy", "forces"] + (["stress"] if periodic else [])
        properties += [
            p
            for p in adapter.declared_outputs()
            if (periodic or "stress" not in p) and not p.startswith(_INTERNAL)
        ]
    residual_degrees = tuple(trusted_degrees(q.degree))

    groups = [frames] if not layers else [[frame] for frame in frames]
    capture = LayerCapture(adapter.hook_root(), layers) if layers else None
    entries: dict[str, list] = {}
    for group in groups:
        if capture is None:
            out = evaluate_rotated(adapter, group, q, properties, batch_size)
        else:
            with capture:
                out = evaluate_rotated(adapter, group, q, properties, batch_size)
        n_atoms = torch.tensor([len(f) for f in group])
        for name, u in out.items():
            u = u.unsqueeze(1) if (len(group) == 1 and not out.per_atom[name]) else u
            deg = residual_degrees if name in _PHYSICAL else ()
            rows = _rows(out, name, n_atoms)
            entry = _summarize(u, q, out.kinds[name], max_lambda, rows, len(group), deg)
            entries.setdefault(name, []).append(entry)
            if out.kinds[name] == "rank2":
                for lam, part in rank2_parts(u).items():
                    if lam == 1 and not bool(part.abs().max() > 1e-12 * u.abs().max()):
                        continue  # no antisymmetric part to report
                    sub = _summarize(part, q, "rank2", max_lambda, rows, len(group))
                    entries.setdefault(f"{name}[lambda={lam}]", []).append(sub)
        if capture is not None:
            counts = _full_list_counts(out, len(group[0]))
            for label, (feats, shape) in capture.stacked(out.plan).items():
                # one row of invariant-looking channels: the error is their spread
                feats = drop_padding(feats, shape, counts)[:, None]
                entry = _summarize(
                    feats, q, "scalar", max_lambda, torch.zeros(1, dtype=torch.long), 1
                )
                entries.setdefault(f"layer:{label}", []).append({**entry, "kind": "layer"})
    merged = {name: _merge(parts) for name, parts in entries.items()}
    for name, abs_error in model_errors(adapter, frames, properties, batch_size).items():
        merged[name]["abs_error"] = abs_error
        threshold = auc_threshold if name == "forces" else None  # per-atom rank statistics
        merged[name]["accuracy"] = compare(abs_error, merged[name]["error_rows"], threshold)
    return Diagnosis(q, max_lambda, merged)


def rank2_parts(u: torch.Tensor) -> dict[int, torch.Tensor]:
    r"""The O(3) parts of rank-2 responses ``u [..., 3, 3]``: isotropic
    :math:`\lambda = 0` (:math:`\mathrm{tr}(S)/3\, I`), antisymmetric
    :math:`\lambda = 1` (:math:`(S - S^T)/2`) and symmetric traceless
    :math:`\lambda = 2`; each is still a rank-2 tensor, they sum to ``u``
    and are mutually orthogonal, so their squared errors add up."""
    eye = torch.eye(3, dtype=u.dtype, device=u.device)
    iso = torch.diagonal(u, dim1=-2, dim2=-1).sum(-1)[..., None, None] * eye / 3
    anti = (u - u.transpose(-1, -2)) / 2
    return {0: iso, 1: anti, 2: u - iso - anti}
