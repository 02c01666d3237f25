r"""Model error beside equivariance error (the paper's Fig. 2, top panel).

For structures that carry reference labels, the absolute error of the raw
model (unrotated input) is set next to the equivariance error :math:`A` of
the same output, sample by sample: per structure for the energy (eV) and
the stress (eV/A^3, Frobenius norm of the 3x3 difference), per atom for the
forces (eV/A, Euclidean norm). Averaged over orientations, the squared error
of the raw model is the squared error of the averaged model plus
:math:`A^2`, so :math:`A` is a lower bound of the model error's
orientation-dependent part. Per atom (forces), :mod:`symmd.ranking` says how
well :math:`A_i` orders :math:`|F_i - F_i^{ref}|`: Spearman's rank
correlation and the ROC-AUC for the atoms whose error exceeds a threshold.

Labels are read by :func:`symmd._labels.labels_of` (calculator results as
``ase.io.read`` gives them for an extxyz file, else the ``info``/``arrays``
names metatrain reads by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import ase
import numpy as np
import torch

from ._labels import labels_of
from .models import Adapter, evaluate_rotated
from .ranking import rank_scores

__all__ = ["LABELLED", "compare", "model_errors"]

#: outputs whose labels are read, with the shape of one structure's label
LABELLED = ("energy", "forces", "stress")


def model_errors(
    adapter: Adapter,
    frames: Sequence[ase.Atoms],
    properties: Sequence[str],
    batch_size: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Absolute error of the raw model against the labels, per sample:
    ``energy [S]``, ``forces [N_total]``, ``stress [S]``, for the outputs in
    ``properties`` that every frame labels. Empty when a frame has none."""
    labels = [labels_of(frame) for frame in frames]
    names = [p for p in LABELLED if p in properties and all(p in lab for lab in labels)]
    if not names:
        return {}
    out = evaluate_rotated(
        adapter, list(frames), torch.eye(3, dtype=torch.float64), names, batch_size
    )
    errors = {}
    for name in names:
        predicted = out[name][0].cpu().numpy()
        if name == "forces":
            reference = np.concatenate([lab[name] for lab in labels])
            errors[name] = np.linalg.norm(predicted - reference, axis=-1)
        elif name == "energy":
            errors[name] = np.abs(predicted - np.array([float(lab[name]) for lab in labels]))
        else:
            reference = np.stack([lab[name] for lab in labels])
            errors[name] = np.linalg.norm((predicted - reference).reshape(len(frames), -1), axis=-1)
    return errors


def compare(
    abs_error: np.ndarray, equivariance_error: np.ndarray, threshold: Optional[float] = None
) -> dict[str, float]:
    """Medians of the two distributions and their ratio (model / equivariance);
    with ``threshold``, also how well A ranks the error sample by sample
    (:func:`symmd.ranking.rank_scores`): ``spearman``, ``roc_auc`` for
    ``abs_error > threshold`` (``auc_threshold``), ``n_above``."""
    model = float(np.median(abs_error))
    equiv = float(np.median(equivariance_error))
    out = {
        "median_abs_error": model,
        "median_equivariance_error": equiv,
        "ratio": model / equiv if equiv > 0 else float("inf"),
    }
    if threshold is not None:
        scores = rank_scores(equivariance_error, abs_error, threshold)
        out.update(
            spearman=scores["spearman"],
            roc_auc=scores["roc_auc"],
            auc_threshold=scores["threshold"],
            n_above=scores["n_above"],
        )
    return out
