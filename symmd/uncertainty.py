r"""The per-atom equivariance error as an uncertainty: trust levels and frame selection.

The per-atom equivariance error of the forces, :math:`A_i` (eV/A; the norm
over xyz of the spread of the back-rotated forces of atom :math:`i` over
O(3), API.md), needs no second model: the :class:`~symmd.Monitor` estimates
it from two extra rotated evaluations. Used like a committee's force
deviation (DP-GEN), its largest value over the atoms of a frame,
:math:`\max_i A_i` (the monitor's ``a_forces_max``), is compared with two
trust levels :math:`lo < hi`:

- :math:`\max_i A_i < lo`: the model is trusted;
- :math:`lo \le \max_i A_i < hi`: a candidate for labelling and retraining
  (:func:`select_frames`, ``symmd select``; ``monitor.candidates``);
- :math:`\max_i A_i \ge hi`: not trusted; the monitor flags the step and
  applies its action.

:func:`trust_levels` chooses the two levels from a labelled validation set
(predicted values against the true errors, e.g. from
:func:`per_atom_errors`); :mod:`symmd.ranking` says how well a predictor
orders the true error at all.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import ase
import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = [
    "PER_ATOM_METRICS",
    "Selection",
    "TrustLevels",
    "alarm_level",
    "check_levels",
    "check_limit",
    "check_trust",
    "classify",
    "frame_max",
    "per_atom_errors",
    "select_frames",
    "trust_levels",
]

#: per-atom metrics the monitor can flag (absolute, per frame maximum) -> the array they come from
PER_ATOM_METRICS = {"a_forces_max": "equivariance_error_forces"}
ARRAY = PER_ATOM_METRICS["a_forces_max"]


def _level(value: Any) -> Optional[float]:
    """``value`` as a float level >= 0 (inf allowed), or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    value = float(value)
    return value if value >= 0 and not math.isnan(value) else None


def check_levels(lo: Any, hi: Any, what: str = "") -> tuple[float, float]:
    """``(lo, hi)`` as floats with ``0 <= lo < hi`` (``hi`` may be inf); a
    ValueError naming both otherwise."""
    low, high = _level(lo), _level(hi)
    if low is None or high is None or math.isinf(low) or not low < high:
        raise ValueError(
            f"{what}lo and hi must be levels with 0 <= lo < hi (hi may be inf), got lo={lo!r}, hi={hi!r}"
        )
    return low, high


def check_limit(metric: str, value: Any) -> float:
    """An absolute per-atom limit ``threshold[metric]`` as a float >= 0."""
    level = _level(value)
    if level is None:
        raise ValueError(f"threshold[{metric!r}] must be a number >= 0 (eV/A), got {value!r}")
    return level


def check_trust(trust: Any) -> dict[str, tuple[float, float]]:
    """The monitor's ``trust`` argument as ``{metric: (lo, hi)}``: a pair
    ``(lo, hi)`` (or a :class:`TrustLevels`) for ``a_forces_max``, or a dict
    over :data:`PER_ATOM_METRICS`."""
    if trust is None:
        return {}
    items = trust.items() if isinstance(trust, dict) else [("a_forces_max", trust)]
    out = {}
    for metric, pair in items:
        if metric not in PER_ATOM_METRICS:
            raise ValueError(
                f"trust: unknown metric {metric!r}; per-atom metrics: {sorted(PER_ATOM_METRICS)}"
            )
        try:
            lo, hi = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"trust must be a pair (lo, hi) in eV/A or a dict of pairs, got {pair!r}"
            ) from None
        out[metric] = check_levels(lo, hi, "trust: ")
    return out


@dataclasses.dataclass(frozen=True)
class TrustLevels:
    """Trust levels chosen by :func:`trust_levels` (units of the predictor,
    eV/A for :math:`A_F`) and what they do on the validation set they came
    from: ``recall_lo``/``recall_hi`` the fraction of samples with error above
    ``tolerance`` at or above ``lo``/``hi``; ``false_alarm_lo``/
    ``false_alarm_hi`` the fraction within the tolerance at or above them.
    Unpacks as ``lo, hi`` (``Monitor(trust=levels)``)."""

    lo: float
    hi: float
    tolerance: float
    recall_lo: float
    recall_hi: float
    false_alarm_lo: float
    false_alarm_hi: float
    n: int
    n_above: int

    def __iter__(self):
        return iter((self.lo, self.hi))


def alarm_level(values: ArrayLike, false_alarm: float = 0.0) -> float:
    """The smallest level that at most a fraction ``false_alarm`` of
    ``values`` reach (``>=``): just above their ``1 - false_alarm`` quantile
    (for ``false_alarm=0``, just above the largest value)."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("values must be a non-empty array of finite numbers")
    if not 0.0 <= false_alarm < 1.0:
        raise ValueError(f"false_alarm must be in [0, 1), got {false_alarm!r}")
    allowed = int(math.floor(false_alarm * v.size))  # values that may reach the level
    return float(np.nextafter(v[v.size - 1 - allowed], np.inf))


def trust_levels(
    predicted: ArrayLike,
    error: ArrayLike,
    *,
    tolerance: float = 0.1,
    recall: float = 0.9,
    false_alarm: float = 0.0,
) -> TrustLevels:
    r"""Choose trust levels ``(lo, hi)`` for a predictor from labelled samples.

    ``predicted`` and ``error``: one value per sample, same order (for the
    monitor's ``a_forces_max``: per frame, :math:`\max_i A_i` against
    :math:`\max_i |F_i - F_i^{ref}|`, see :func:`frame_max`); ``tolerance``:
    the error a sample may have and still count as right (units of
    ``error``, default 0.1 eV/A).

    - ``hi``: the smallest level that at most ``false_alarm`` (default 0) of
      the samples within the tolerance reach (:func:`alarm_level`): above it
      the validation set holds only samples with errors beyond tolerance.
    - ``lo``: the largest level that at least ``recall`` (default 0.9) of the
      samples beyond tolerance reach, capped below ``hi``: the candidates
      ``[lo, hi)`` and the flags hold that fraction of them.

    Needs samples on both sides of the tolerance; a ValueError says which
    side is missing. The levels are only as good as the validation set: take
    it from where the model will run (e.g. frames of the MD you want to
    watch, relabelled), never from the runs you evaluate the levels on.
    """
    u = np.asarray(predicted, dtype=np.float64).reshape(-1)
    e = np.asarray(error, dtype=np.float64).reshape(-1)
    if u.shape != e.shape or u.size == 0:
        raise ValueError(
            f"predicted and error must be non-empty with one value per sample, got {u.size} and {e.size}"
        )
    if not (np.isfinite(u).all() and np.isfinite(e).all()):
        raise ValueError("predicted and error must be finite (found nan or inf)")
    if _level(tolerance) is None or math.isinf(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall!r}")
    bad = e > tolerance
    if bad.all() or not bad.any():
        side = "within" if bad.all() else "above"
        raise ValueError(
            f"no sample has an error {side} tolerance={tolerance:g} ({e.size} samples, errors "
            f"{e.min():.3g} to {e.max():.3g}); levels need samples on both sides: "
            + ("raise the tolerance or add structures the model gets right" if bad.all() else
               "lower the tolerance or add harder structures (e.g. frames of a hot MD run)")
        )  # fmt: skip
    hi = alarm_level(u[~bad], false_alarm)
    ranked = np.sort(u[bad])[::-1]  # descending: the k largest reach ranked[k - 1]
    lo = float(ranked[max(int(math.ceil(recall * ranked.size)), 1) - 1])
    lo = min(lo, float(np.nextafter(hi, -np.inf)))
    return TrustLevels(
        lo=lo,
        hi=hi,
        tolerance=float(tolerance),
        recall_lo=float(np.mean(u[bad] >= lo)),
        recall_hi=float(np.mean(u[bad] >= hi)),
        false_alarm_lo=float(np.mean(u[~bad] >= lo)),
        false_alarm_hi=float(np.mean(u[~bad] >= hi)),
        n=int(u.size),
        n_above=int(bad.sum()),
    )


def frame_max(values: ArrayLike, frame: ArrayLike) -> np.ndarray:
    """Largest per-atom value of each frame: ``values [N]`` with ``frame [N]``
    the frame index (0..S-1) of each atom -> ``[S]``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    f = np.asarray(frame).reshape(-1)
    if v.shape != f.shape:
        raise ValueError(
            f"values and frame must have one entry per atom, got {v.size} and {f.size}"
        )
    out = np.full(int(f.max()) + 1 if f.size else 0, -np.inf)
    np.maximum.at(out, f, v)
    return out


def per_atom_errors(
    model,
    frames: Union[ase.Atoms, Sequence[ase.Atoms]],
    *,
    rotations: int = 2,
    quadrature: Union[None, int, Any] = None,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> dict[str, np.ndarray]:
    r"""Per-atom :math:`A_i` of the forces (eV/A) of ``model`` on ``frames``,
    beside the true error :math:`|F_i - F_i^{ref}|` where every frame carries
    force labels (:func:`symmd._labels.labels_of`).

    By default :math:`A_i` is estimated as the monitor does it: the square
    root of the unbiased sample variance over ``rotations`` Haar draws
    (seeded; the same draws for every frame, one batched call), so levels
    chosen on it account for the estimator's noise. With ``quadrature`` (a
    degree or a :class:`~symmd.o3.Quadrature`) it is the rule's value
    instead. Returns ``{"a": [N], "frame": [N] (frame index of each atom),
    "error": [N] (only with labels)}``.
    """
    from . import metrics, o3
    from ._accuracy import model_errors
    from .models import evaluate_rotated, load

    adapter = load(model)
    frames = [frames] if isinstance(frames, ase.Atoms) else list(frames)
    if not frames:
        raise ValueError("no frames given: pass an ase.Atoms or a non-empty list")
    if quadrature is None:
        q = o3.random_o3(rotations, np.random.default_rng(seed))
        u = evaluate_rotated(adapter, frames, q, ("forces",), batch_size)["forces"]
        a = metrics.sample_error(u, q, "vector")[0].clamp_min(0).sqrt()
    else:
        q = quadrature if isinstance(quadrature, o3.Quadrature) else o3.quadrature(int(quadrature))
        u = evaluate_rotated(adapter, frames, q, ("forces",), batch_size)["forces"]
        a = metrics.equivariance_error(u, q, "vector")
    out = {
        "a": a.to(torch.float64).cpu().numpy(),
        "frame": np.repeat(np.arange(len(frames)), [len(f) for f in frames]),
    }
    errors = model_errors(adapter, frames, ("forces",), batch_size)
    if "forces" in errors:
        out["error"] = errors["forces"]
    return out


@dataclasses.dataclass
class Selection:
    """What :func:`select_frames` found: ``indices`` of the selected frames in
    the input, the ``frames`` themselves, ``skipped`` (indices of frames
    without the array: unchecked MD steps), ``values`` (the per-frame maximum
    of every frame that has the array, by input index) and ``path`` (the file
    written, or None)."""

    indices: list[int]
    frames: list
    skipped: list[int]
    values: dict[int, float]
    path: Optional[str] = None

    @property
    def count(self) -> int:
        return len(self.indices)


def select_frames(
    source: Union[str, os.PathLike, Sequence[ase.Atoms]],
    lo: float,
    hi: float = math.inf,
    *,
    out: Union[None, str, os.PathLike] = None,
    array: str = ARRAY,
) -> Selection:
    """The frames whose largest per-atom ``array`` value lies in ``[lo, hi)``.

    ``source``: an extxyz trajectory (``symmd md --trajectory`` writes
    ``equivariance_error_forces``, eV/A, at checked steps) or a list of
    ``ase.Atoms``. Frames without the array (steps the monitor did not
    check) are skipped and listed in ``Selection.skipped``; a ValueError when
    no frame has it. ``out``: extxyz file to write the selected frames to
    (written even when empty, so a pipeline always finds it).
    """
    lo, hi = check_levels(lo, hi)
    if isinstance(source, (str, os.PathLike)):
        from ._md_command import read_frames

        name = os.fspath(source)
        frames = read_frames(name)
    else:
        name = "the frames"
        frames = list(source)
    values, skipped = {}, []
    for index, atoms in enumerate(frames):
        per_atom = atoms.arrays.get(array)
        if per_atom is None or len(per_atom) == 0:
            skipped.append(index)
        else:
            values[index] = float(np.max(per_atom))
    if not values:
        raise ValueError(
            f"no frame of {name} carries the per-atom array {array!r} ({len(frames)} frames); "
            "write the trajectory with `symmd md --trajectory` (frames at checked steps carry it)"
        )
    indices = [i for i, v in values.items() if lo <= v < hi]
    chosen = [frames[i] for i in indices]
    path = None
    if out is not None:
        import ase.io

        path = os.fspath(out)
        ase.io.write(path, chosen, format="extxyz")
    return Selection(indices, chosen, skipped, values, path)


def classify(value: float, lo: float, hi: float) -> Optional[str]:
    """``"flag"`` for ``value >= hi``, ``"candidate"`` for ``lo <= value < hi``, else None."""
    if value >= hi:
        return "flag"
    return "candidate" if value >= lo else None
