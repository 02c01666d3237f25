r"""The training-time view: character spectra along a series of checkpoints.

For the models :math:`f_e` saved at epochs :math:`e` of one training run,
:func:`diagnose_training` runs :func:`symmd.diagnose` on each, on the same
structures and quadrature, and keeps, per output and per layer, the mean
normalized spectrum :math:`B_{(\lambda,\sigma)}/\sum B` and the mean
equivariance error against the epoch. Plotted as heatmaps (:math:`\lambda`
against epoch, as in the paper's Figs. 3-4), with one row per run, it shows
where and when a model learns (or fails to learn) the symmetry: for example
with and without rotational augmentation (``examples/train_model/``).

A checkpoint series is a list of models (paths, modules, ...), or a folder
whose ``*.ckpt`` (eager, so layers can be hooked) or ``*.pt`` files are sorted
by the last number in their name (``epoch_012.ckpt`` -> 12).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np

from ._plotting import training_figure
from .diagnose import diagnose
from .models import EQUIVARIANT_SECTORS

__all__ = [
    "TrainingDiagnosis",
    "diagnose_training",
    "find_checkpoints",
    "plot_training",
    "save_json",
]


def _epoch_of(path: pathlib.Path) -> Optional[int]:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def find_checkpoints(folder: Union[str, os.PathLike]) -> tuple[list[str], list[int]]:
    """The ``*.ckpt`` files of ``folder`` (else its ``*.pt`` files), sorted by
    the last number in their names; returns ``(paths, epochs)``."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    files = sorted(folder.glob("*.ckpt")) or sorted(folder.glob("*.pt"))
    if not files:
        raise ValueError(f"no *.ckpt or *.pt files in {str(folder)!r}")
    unnumbered = [f.name for f in files if _epoch_of(f) is None]
    if unnumbered:
        raise ValueError(
            f"cannot read an epoch number from {unnumbered}; name the files like epoch_012.ckpt"
        )
    epochs = {f: int(_epoch_of(f) or 0) for f in files}
    files.sort(key=epochs.__getitem__)
    return [str(f) for f in files], [epochs[f] for f in files]


@dataclasses.dataclass
class TrainingDiagnosis:
    """Result of :func:`diagnose_training`: one :class:`Diagnosis` per epoch."""

    epochs: list
    diagnoses: list

    @property
    def names(self) -> list[str]:
        """Every output and layer, in order of first appearance."""
        return list(dict.fromkeys(name for d in self.diagnoses for name in d.properties))

    @property
    def max_lambda(self) -> int:
        return self.diagnoses[0].max_lambda

    def spectrum(self, name: str) -> dict[tuple[int, int], np.ndarray]:
        """``{(lam, sigma): [E]}``: the spectrum of ``name`` (mean over
        structures) at each epoch, NaN where ``name`` is missing."""
        out = {}
        for key in ((lam, s) for lam in range(self.max_lambda + 1) for s in (1, -1)):
            out[key] = np.array(
                [
                    np.mean(d.properties[name]["spectrum"][key]) if name in d.properties else np.nan
                    for d in self.diagnoses
                ]
            )
        return out

    def error(self, name: str) -> np.ndarray:
        """Mean equivariance error of ``name`` at each epoch ``[E]``."""
        return np.array(
            [
                np.mean(d.properties[name]["error"]) if name in d.properties else np.nan
                for d in self.diagnoses
            ]
        )

    def breaking(self, name: str) -> np.ndarray:
        """Fraction of the spectrum outside the sectors an exact model would
        fill (for layers and features: outside (0, +1)), at each epoch."""
        spec = self.spectrum(name)
        allowed = EQUIVARIANT_SECTORS.get(name, ((0, 1),))
        return 1.0 - np.sum([spec[b] for b in allowed], axis=0)

    def to_dict(self) -> dict:
        """JSON-ready: ``{"epochs", "quadrature", "max_lambda", "properties":
        {name: {"error": [E], "breaking": [E], "spectrum": {"lam,sigma": [E]}}},
        "diagnoses": [Diagnosis.to_dict() per epoch]}``."""
        q = self.diagnoses[0].quadrature
        return {
            "epochs": list(self.epochs),
            "quadrature": {"name": q.name, "size": len(q), "degree": q.degree},
            "max_lambda": self.max_lambda,
            "properties": {
                name: {
                    "error": self.error(name).tolist(),
                    "breaking": self.breaking(name).tolist(),
                    "spectrum": {
                        f"{lam},{s}": v.tolist() for (lam, s), v in self.spectrum(name).items()
                    },
                }
                for name in self.names
            },
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }

    def table(self) -> str:
        """Per epoch: the symmetry-breaking fraction of every output and layer."""
        names = self.names
        lines = ["fraction of the spectrum outside the equivariant sectors (mean over structures)"]
        lines.append("epoch  " + "  ".join(f"{_short(n):>14}" for n in names))
        for i, epoch in enumerate(self.epochs):
            lines.append(
                f"{epoch!s:>5}  " + "  ".join(f"{self.breaking(n)[i]:14.2e}" for n in names)
            )
        return "\n".join(lines)

    def plot(self, path, names: Optional[Sequence[str]] = None, label: str = "") -> None:
        """Heatmaps lambda x epoch of every output and layer (see :func:`plot_training`)."""
        plot_training({label or "run": self}, path, names)


def _short(name: str) -> str:
    name = name.replace("layer:backend.", "layer:").replace("mtt::aux::", "")
    return name if len(name) <= 14 else name[:13] + "~"


def plot_training(
    runs: Mapping[str, TrainingDiagnosis],
    path,
    names: Optional[Sequence[str]] = None,
    title: str = "",
) -> None:
    """Heatmaps of the spectrum along training, one row per run (e.g. with
    and without augmentation) and one column per output or layer; colour is
    the mean fraction :math:`B_{(\\lambda,\\sigma)}/\\sum B` on a log scale."""
    if not runs:
        raise ValueError("runs is empty: pass {label: TrainingDiagnosis}")
    first = next(iter(runs.values()))
    names = list(names) if names else list(dict.fromkeys(n for r in runs.values() for n in r.names))
    data = {
        label: (run.epochs, {n: run.spectrum(n) for n in names if n in run.names})
        for label, run in runs.items()
    }
    training_figure(data, names, first.max_lambda, path, title)


def diagnose_training(
    models: Union[str, os.PathLike, Sequence],
    structures,
    *,
    epochs: Optional[Sequence] = None,
    max_lambda: int = 4,
    quadrature=None,
    properties: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    batch_size: Optional[int] = None,
) -> TrainingDiagnosis:
    """Diagnose every model of a training run on the same structures.

    Parameters
    ----------
    models: a folder of checkpoints (see :func:`find_checkpoints`) or a list
        of anything :func:`symmd.models.load` accepts, in training order.
    structures: one ``ase.Atoms`` or a list.
    epochs: labels of the models (default: from the file names, else 0, 1, ...).
    max_lambda, quadrature, properties, layers, batch_size: as for
        :func:`symmd.diagnose` (``layers`` need eager models: ``.ckpt`` files).
    """
    if isinstance(models, (str, os.PathLike)):
        models, found = find_checkpoints(models)
        epochs = found if epochs is None else epochs
    models = list(models)
    if not models:
        raise ValueError("models is empty: pass a folder of checkpoints or a list of models")
    if epochs is None:
        paths = [pathlib.Path(m) for m in models if isinstance(m, (str, os.PathLike))]
        numbers = [_epoch_of(p) for p in paths]
        epochs = (
            numbers
            if len(paths) == len(models) and None not in numbers
            else list(range(len(models)))
        )
    epochs = list(epochs)
    if len(epochs) != len(models):
        raise ValueError(f"got {len(epochs)} epochs for {len(models)} models")
    diagnoses = [
        diagnose(
            model,
            structures,
            max_lambda=max_lambda,
            quadrature=quadrature,
            properties=properties,
            layers=layers,
            batch_size=batch_size,
        )
        for model in models
    ]
    return TrainingDiagnosis(epochs, diagnoses)


def save_json(runs: Mapping[str, TrainingDiagnosis], path) -> None:
    """Write ``{label: TrainingDiagnosis.to_dict()}`` to ``path``."""
    with open(path, "w") as handle:
        json.dump({label: run.to_dict() for label, run in runs.items()}, handle, indent=1)
