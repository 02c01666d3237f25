r"""Equivariance error and physical sanity during MD: the monitor observes.

At every ``every``-th force evaluation of its :class:`~symmd.SymmetryCalculator`
(starting with the first) the monitor draws ``m = rotations`` Haar-random
O(3) elements :math:`g_j`, which the calculator evaluates in the step's own
batched model call (:meth:`Monitor.draws`, then :meth:`Monitor.check`). With
:math:`z_j` the back-transformed responses, the sample variance

.. math:: \widehat{A^2} = \frac{1}{m - 1} \sum_j \|z_j - \bar z\|^2

is an unbiased estimate of :math:`A^2` (:func:`symmd.metrics.sample_error`;
the unrotated evaluation is left out: it would bias the estimate upwards by
:math:`\|z(e) - \Pi\|^2`). Its standard error is the Gaussian estimate
:math:`\widehat{A^2} \sqrt{2 / ((m - 1) n_c)}` with :math:`n_c` the number of
scalar components (1 for the energy, :math:`3N` for the forces, 9 for the
stress). The same estimator runs in every mode, "average" included (where the
rule's own spread is exact only for responses band-limited to half its
degree). The force metric is the RMS over atoms,
:math:`A_F = (\frac1N \sum_i A_i^2)^{1/2}`, also relative to the RMS force.

The largest per-atom value, ``a_forces_max`` (eV/A), is also an uncertainty
of the model, judged in every mode against an absolute ``threshold`` or DP-GEN
style trust levels ``trust=(lo, hi)``: candidates in ``[lo, hi)`` are logged,
``hi`` and above flags (:mod:`symmd.uncertainty` chooses the levels).

Every step (no model call) it also checks the physics: non-finite values, the
shortest interatomic distance against ``min_distance_factor`` times the sum of
covalent radii (collapse), the largest force, a temperature jump, and, with
``ensemble="nve"``, the drift of the total energy; and the momentum,
angular momentum, net force and net torque that direct forces break
(:mod:`symmd.conservation`). Thresholds that are not
given are taken relative to the run's own baseline, the median over the first
``baseline`` checks.

A part reports, its owner acts: before evaluating a step the calculator asks
:meth:`Monitor.draws` which rotations the step's check wants (a
:class:`Draws`, or ``None``), evaluates them with the step, and hands them
back to :meth:`Monitor.check`, which logs what it saw and returns an
:class:`Observation` (estimates, flags, the reaction it asks for); the
calculator applies it (result keys, mode switches, stopping).
The monitor's own side effects are its log, its ``history``/``events``,
the warnings of ``action="warn"``, calling a callable action, and writing
the last good frame when it asks to stop.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, Optional, Union

import numpy as np
import torch
from ase import units
from ase.data import covalent_radii

from . import conservation
from ._kwargs import check_keywords
from .conservation import METRICS as CONSERVATION_METRICS
from .metrics import sample_error
from .o3 import Quadrature, random_o3
from .uncertainty import PER_ATOM_METRICS, check_limit, check_trust, classify

__all__ = ["LOG_FIELDS", "Draws", "InstabilityWarning", "Monitor", "Observation"]

LOG_FIELDS = [
    "step", "time_fs", "mode", "epot", "ekin", "etot", "temperature", "max_force",
    "min_distance", "a2_energy", "a2_energy_se", "a2_forces", "a2_forces_se",
    "a_forces_rms", "a_forces_max", "rel_forces", "a2_stress", "a2_stress_se",
    *CONSERVATION_METRICS, "flags", "candidates",
]  # fmt: skip
#: flags that measure the symmetry itself (averaging cures them)
EQUIVARIANCE_FLAGS = ("rel_forces", "a_forces_rms", "energy", "stress")


class InstabilityWarning(UserWarning):
    """A monitored MD step failed a check with ``action="warn"``."""


@dataclasses.dataclass
class Observation:
    """What :meth:`Monitor.check` saw at one step, and what it asks for.

    ``row``: the logged fields (:data:`LOG_FIELDS`); ``flags``: ``(metric,
    value, limit)`` of every failed check; ``errors``: equivariance errors
    estimated at this step for ``calc.results`` (``equivariance_error_energy``
    eV, ``..._forces`` ``[N]`` eV/A, ``..._stress`` eV/A^3; empty when not
    measured); ``message``: one line naming the step, metric and value;
    ``request``: ``None``, ``"average"`` or ``"none"`` (a mode switch), or
    ``"stop"``; ``last_good``: the frame file written when stopping.
    """

    step: int
    row: dict
    flags: list
    errors: dict
    message: str = ""
    request: Optional[str] = None
    last_good: Optional[str] = None

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


@dataclasses.dataclass
class Draws:
    """The Haar-random rotations one check wants, and their responses.

    ``step``: the force evaluation checked; ``rotations``: ``m`` Haar-random
    O(3) elements (:func:`symmd.o3.random_o3`); ``responses``: the model's
    responses to them (a :class:`~symmd.models.Responses`, ``[m, ...]`` per
    property, rotated frame), filled in by whoever evaluates them (the
    calculator, in the step's own batch); ``None`` until then.
    """

    step: int
    rotations: Quadrature
    responses: Any = None


def _free_name(path: str) -> str:
    """``path`` if it does not exist, else ``stem.1.ext``, ``stem.2.ext``, ..."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(f"{stem}.{n}{ext}"):
        n += 1
    return f"{stem}.{n}{ext}"


class Monitor:
    """Watch a :class:`~symmd.SymmetryCalculator` during MD.

    Parameters
    ----------
    every: estimate the equivariance error every ``every``-th force
        evaluation (the first included); ``0`` turns the estimate off and
        keeps the per-step physical checks.
    rotations: number ``m >= 2`` of Haar-random extra evaluations per
        estimate, evaluated in one batch.
    threshold: ``None`` (relative to the run's baseline: ``baseline_factor``
        times the baseline median relative force error), a float (relative
        force error :math:`A_F/F_{rms}`), or a dict with any of the keys
        ``rel_forces``, ``a_forces_rms`` (eV/A), ``a_forces_max`` (the
        largest per-atom A of the forces, eV/A, absolute), ``energy`` (eV),
        ``stress`` (eV/A^3), ``max_force`` (eV/A), ``min_distance_factor``,
        ``temperature_factor``, ``energy_drift`` (eV/atom), ``momentum``,
        ``angular_momentum`` (thermal units), ``net_force`` (eV/A),
        ``net_torque`` (eV) (see :mod:`symmd.conservation`). A value flags
        when it exceeds its limit (``>``).
    trust: trust levels ``(lo, hi)`` in eV/A of ``a_forces_max`` (or a dict
        ``{"a_forces_max": (lo, hi)}``, or :func:`symmd.uncertainty.trust_levels`'
        result), in the DP-GEN sense: a check with ``lo <= value < hi`` is a
        candidate for labelling (``monitor.candidates``, the ``candidates``
        log column; no action), ``value >= hi`` flags and applies the action.
        Per-atom flags and levels apply in every mode, ``"average"`` included:
        they judge the model, which averaging does not change.
    action: ``"warn"``, ``"raise"`` (the calculator raises
        :class:`~symmd.InstabilityError`), ``"symmetrize"`` (the calculator
        switches to ``"average"``) or a callable ``action(monitor, event)``.
        With ``symmetrize="adaptive"`` the first flag always switches to
        averaging; the action then applies to flags that persist while
        averaging (a collision is not cured by symmetry).
    log: CSV path (one row per check or flag, flushed) or None.
    seed: seeds the rotations (default: the calculator's seed).
    ensemble: ``"nve"`` turns on the energy-drift check and holds momentum
        and angular momentum to conservation (a thermostat exchanges them
        with its bath: looser limits).
    timestep: MD time step in fs, for the ``time_fs`` column.
    last_good: path where the last frame that passed every check is written
        (extxyz) when the monitor asks to stop; default
        ``<log>.last_good.extxyz`` when a log is given.
    back_off: in adaptive use, ask to switch averaging off again after
        ``patience`` checks below half the threshold (hysteresis).
    overwrite: replace an existing ``log``; by default an existing file is
        kept and the log goes to the first free name ``<stem>.<n><ext>``
        (``monitor.log`` holds the path used).
    """

    def __init__(
        self,
        every: int = 10,
        rotations: int = 2,
        threshold: Union[None, float, dict] = None,
        action: Union[str, Callable] = "warn",
        log: Optional[Union[str, os.PathLike]] = None,
        seed: Optional[int] = None,
        *,
        ensemble: Optional[str] = None,
        timestep: Optional[float] = None,
        baseline: int = 5,
        baseline_factor: float = 4.0,
        last_good: Optional[Union[str, os.PathLike]] = None,
        back_off: bool = False,
        patience: int = 5,
        overwrite: bool = False,
        trust: Any = None,
        **kwargs: Any,
    ):
        check_keywords(kwargs, Monitor.__init__, "Monitor")
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(
                f"every must be a non-negative int (0: physical checks only), got {every!r}"
            )
        if isinstance(rotations, bool) or not isinstance(rotations, int) or rotations < 2:
            raise ValueError(
                f"rotations must be an int >= 2 (an unbiased variance needs two draws), got {rotations!r}"
            )
        if not (callable(action) or action in ("warn", "raise", "symmetrize")):
            raise ValueError(
                f"action must be 'warn', 'raise', 'symmetrize' or a callable, got {action!r}"
            )
        if threshold is not None and not isinstance(threshold, (int, float, dict)):
            raise TypeError(
                f"threshold must be None, a float or a dict, got {type(threshold).__name__}"
            )
        if ensemble not in (None, "nve", "langevin", "nvt"):
            raise ValueError(f"ensemble must be None, 'nve', 'nvt' or 'langevin', got {ensemble!r}")
        self.every, self.rotations, self.action, self.seed = every, rotations, action, seed
        self.thresholds = (
            {"rel_forces": float(threshold)}
            if isinstance(threshold, (int, float))
            else dict(threshold or {})
        )
        self.trust = check_trust(trust)
        for metric in PER_ATOM_METRICS:
            if metric in self.thresholds:
                self.thresholds[metric] = check_limit(metric, self.thresholds[metric])
                if metric in self.trust:
                    raise ValueError(
                        f"give {metric} either as threshold[{metric!r}] or in trust=(lo, hi), not both"
                    )
        self.thresholds.setdefault("min_distance_factor", 0.6)
        self.thresholds.setdefault("temperature_factor", 3.0)
        self.thresholds.setdefault("energy_drift", 0.05)
        self.ensemble, self.timestep = ensemble, timestep
        self.baseline, self.baseline_factor = baseline, baseline_factor
        self.back_off, self.patience = back_off, patience
        self.overwrite = bool(overwrite)
        self.log: Optional[str] = None if log is None else os.fspath(log)
        self._last_good_given = None if last_good is None else os.fspath(last_good)
        self.history: list[dict] = []
        self.events: list[dict] = []
        #: checks with a per-atom metric in ``[lo, hi)`` of ``trust``: dicts
        #: ``{"step", "metric", "value", "lo", "hi"}``
        self.candidates: list[dict] = []
        self.last_good = None
        self._rng = np.random.default_rng(seed)
        self._attached = False
        self._window: dict[str, list] = {
            k: [] for k in ("rel_forces", "max_force", "temperature", "etot")
        }
        self._calm = 0
        self._conservation = conservation.ConservationCheck(self.thresholds, ensemble)

    @property
    def last_good_path(self) -> Optional[str]:
        """Where the last good frame is written when the monitor asks to stop."""
        if self._last_good_given is not None or self.log is None:
            return self._last_good_given
        return f"{self.log}.last_good.extxyz"

    # -- wiring -----------------------------------------------------------
    def attach(self, seed: Optional[int] = None) -> None:
        """Start a run: seed the draws (``seed`` is the calculator's, used when
        the monitor has none) and open the log, keeping any existing file
        unless ``overwrite``. Called once by the calculator that drives it."""
        if self._attached:
            raise ValueError("this Monitor already watches a calculator; make one per calculator")
        self._attached = True
        self._rng = np.random.default_rng(self.seed if self.seed is not None else seed)
        if self.log is not None:
            if not self.overwrite:
                self.log = _free_name(self.log)
            with open(self.log, "w", newline="") as handle:
                csv.writer(handle).writerow(LOG_FIELDS)

    def _write(self, row: dict) -> None:
        self.history.append(row)
        if self.log is not None:
            with open(self.log, "a", newline="") as handle:
                csv.writer(handle).writerow([row.get(k, "") for k in LOG_FIELDS])
                handle.flush()

    def record_switch(self, step: int, old: str, new: str) -> None:
        """Log a mode switch the calculator made (one row, flushed)."""
        time_fs = step * self.timestep if self.timestep is not None else float("nan")
        self._write(
            {"step": step, "time_fs": time_fs, "mode": new, "flags": f"switch:{old}->{new}"}
        )
        self._calm = 0

    # -- measurements -----------------------------------------------------
    def draws(self, calc) -> Optional[Draws]:
        """The rotations the check of ``calc``'s current force evaluation
        wants (``calc.n_calls``, counted from 1), or ``None`` when this
        evaluation is not checked. Called by the calculator before it
        evaluates the step, so that the draws join the step's own batched
        model call; it then passes them, with their ``responses``, to
        :meth:`check`. Draws from the monitor's seeded generator; changes
        nothing of ``calc``."""
        step = calc.n_calls - 1
        if self.every > 0 and step % self.every == 0:
            return Draws(step, random_o3(self.rotations, self._rng))
        return None

    def estimate(self, calc, atoms, props, draws: Optional[Draws] = None) -> tuple[dict, dict]:
        """Unbiased squared equivariance errors with standard errors (the log
        row) and the per-quantity errors :math:`A` (for ``calc.results``),
        from ``rotations`` Haar draws: those of ``draws`` when they were
        evaluated (:meth:`draws`), otherwise new ones evaluated through
        ``calc.evaluate`` (one more batched call)."""
        keys = [p for p in ("energy", "forces", "stress") if p in props]
        if draws is not None and draws.responses is not None:
            q, out = draws.rotations, draws.responses
        else:
            q = random_o3(self.rotations, self._rng)
            out = calc.evaluate(atoms, q, keys)
        row: dict = {}
        errors: dict = {}
        for key in keys:
            a2, se = sample_error(out[key], q, out.kinds[key])
            if key == "forces":
                n = a2.shape[0]
                per_atom = a2.clamp_min(0).sqrt()
                row.update(
                    a2_forces=float(a2.mean()),
                    a2_forces_se=float(torch.sqrt((se**2).sum()) / n),
                    a_forces_max=float(per_atom.max()),
                )
                errors["equivariance_error_forces"] = per_atom.cpu().numpy()
            else:
                row.update({f"a2_{key}": float(a2), f"a2_{key}_se": float(se)})
                errors[f"equivariance_error_{key}"] = math.sqrt(max(float(a2), 0.0))
        return row, errors

    def _physics(self, results: dict, atoms) -> dict:
        from vesin import NeighborList

        forces = results["forces"]
        epot = results["energy"]
        ekin = atoms.get_kinetic_energy()
        n = len(atoms)
        row = {
            "epot": epot,
            "ekin": ekin,
            "etot": epot + ekin,
            "max_force": float(np.linalg.norm(forces, axis=1).max()),
            "temperature": 2 * ekin / (3 * n * units.kB) if n else 0.0,
        }
        radii = covalent_radii[atoms.numbers]
        cutoff = 2 * radii.max()  # also logs the nearest-neighbour distance
        cell = atoms.cell.array * atoms.pbc[:, None]  # non-periodic vectors are not used
        if n > 1:
            i, j, d = NeighborList(cutoff=float(cutoff), full_list=False).compute(
                atoms.positions, cell, [bool(p) for p in atoms.pbc], quantities="ijd"
            )
            ratio = d / (radii[i] + radii[j]) if len(d) else np.array([np.inf])
            row["min_distance"] = float(d[np.argmin(ratio)]) if len(d) else float("inf")
            row["_min_ratio"] = float(ratio.min())
        else:
            row["min_distance"], row["_min_ratio"] = float("inf"), float("inf")
        return row

    # -- the check -------------------------------------------------------
    def check(self, calc, atoms, props, draws: Optional[Draws] = None) -> Observation:
        """Observe one evaluation of ``calc`` (its ``results``, ``mode``,
        ``symmetrize`` and ``n_calls``) on ``atoms``; log it and return an
        :class:`Observation`. ``draws``: what :meth:`draws` gave for this
        evaluation, with the responses the calculator computed (``None``:
        the check evaluates its own). Nothing of the calculator is changed
        here."""
        step = calc.n_calls - 1
        if draws is not None and draws.step != step:
            raise ValueError(
                f"draws were made for step {draws.step}, not for the step checked ({step}); "
                "ask Monitor.draws(calc) after counting the evaluation"
            )
        results = calc.results
        row: dict = {
            "step": step,
            "mode": calc.mode,
            "time_fs": step * self.timestep if self.timestep is not None else float("nan"),
        }
        finite = all(
            np.isfinite(np.asarray(results[k])).all()
            for k in ("energy", "forces", "stress")
            if k in results
        ) and bool(np.isfinite(atoms.positions).all())
        flags = [] if finite else [("non_finite", float("nan"), float("nan"))]
        if finite:
            row.update(self._physics(results, atoms))
            flags += self._sanity_flags(row, len(atoms))
            direct = bool(getattr(calc.model, "non_conservative", False))
            conserved, broken = self._conservation.observe(atoms, results["forces"], direct)
            row.update(conserved)
            flags += broken
        measured = finite and self.every > 0 and step % self.every == 0
        errors: dict = {}
        if measured:
            estimate, errors = self.estimate(calc, atoms, props, draws)
            row.update(estimate)
            f_rms = float(np.sqrt(np.mean(np.sum(results["forces"] ** 2, axis=1))))
            row["a_forces_rms"] = math.sqrt(max(row["a2_forces"], 0.0))
            row["rel_forces"] = row["a_forces_rms"] / f_rms if f_rms > 0 else 0.0
            if calc.mode != "average":  # the averaged forces are equivariant: nothing to flag
                flags += self._error_flags(row)
            flags += self._per_atom_flags(row)
            self._update_baseline(row)
        row.pop("_min_ratio", None)
        row["flags"] = ";".join(name for name, _, _ in flags)
        if measured or flags:
            self._write(row)
        obs = Observation(step, row, flags, errors)
        if flags:
            self._react(obs, atoms, calc)
        else:
            self.last_good = atoms.copy()
            if measured:
                obs.request = self._back_off_request(row, calc)
        return obs

    def _limit(self, key: str) -> Optional[float]:
        if key in self.thresholds:
            return self.thresholds[key]
        window = self._window.get(key, [])
        if len(window) < self.baseline:
            return None
        return float(np.median(window))

    def _rel_forces_limit(self) -> Optional[float]:
        if "rel_forces" in self.thresholds:
            return self.thresholds["rel_forces"]
        base = self._limit("rel_forces")
        return None if base is None else self.baseline_factor * max(base, 1e-3)

    def _sanity_flags(self, row: dict, n: int) -> list:
        flags = []
        if row["_min_ratio"] < self.thresholds["min_distance_factor"]:
            flags.append(("min_distance", row["min_distance"], row["_min_ratio"]))
        base_f = self._limit("max_force")
        limit_f = self.thresholds.get(
            "max_force", None if base_f is None else max(10 * base_f, 5.0)
        )
        if limit_f is not None and row["max_force"] > limit_f:
            flags.append(("max_force", row["max_force"], limit_f))
        window_t = self._window["temperature"]
        if len(window_t) >= self.baseline:
            limit_t = self.thresholds["temperature_factor"] * float(np.median(window_t)) + 100.0
            if row["temperature"] > limit_t:
                flags.append(("temperature", row["temperature"], limit_t))
        if self.ensemble == "nve" and self._window["etot"]:
            drift = abs(row["etot"] - self._window["etot"][0]) / n
            if drift > self.thresholds["energy_drift"]:
                flags.append(("energy_drift", drift, self.thresholds["energy_drift"]))
        return flags

    def _error_flags(self, row: dict) -> list:
        flags = []
        limit = self._rel_forces_limit()
        if limit is not None and row["rel_forces"] > limit:
            flags.append(("rel_forces", row["rel_forces"], limit))
        for key, metric in (
            ("a_forces_rms", "a2_forces"),
            ("energy", "a2_energy"),
            ("stress", "a2_stress"),
        ):
            if key in self.thresholds and metric in row:
                value = math.sqrt(max(row[metric], 0.0))
                if value > self.thresholds[key]:
                    flags.append((key, value, self.thresholds[key]))
        return flags

    def _per_atom_flags(self, row: dict) -> list:
        """Absolute per-atom limits (``threshold``: flag above) and trust levels
        (a candidate in ``[lo, hi)``, a flag at or above ``hi``)."""
        flags, candidates = [], []
        for metric in PER_ATOM_METRICS:
            if metric not in row:
                continue
            value = row[metric]
            if metric in self.thresholds and value > self.thresholds[metric]:
                flags.append((metric, value, self.thresholds[metric]))
            if metric in self.trust:
                lo, hi = self.trust[metric]
                level = classify(value, lo, hi)
                if level == "flag":
                    flags.append((metric, value, hi))
                elif level == "candidate":
                    candidates.append(metric)
                    self.candidates.append(
                        {"step": row["step"], "metric": metric, "value": value, "lo": lo, "hi": hi}
                    )
        row["candidates"] = ";".join(candidates)
        return flags

    def _update_baseline(self, row: dict) -> None:
        if len(self._window["rel_forces"]) < self.baseline:
            for key in self._window:
                self._window[key].append(row[key])

    # -- reactions -------------------------------------------------------
    def _message(self, step: int, flags: list) -> str:
        name, value, limit = flags[0]
        if name == "min_distance":  # value in A; limit holds the ratio reached
            factor = self.thresholds["min_distance_factor"]
            what = (
                f"min_distance = {value:.4g} A is a collision: {limit:.4f} x the sum of covalent "
                f"radii, below the limit {factor:g}"
            )
        elif name in CONSERVATION_METRICS:
            what = conservation.reason(name, value, limit)
        elif name == "non_finite":
            what = "non-finite positions, energy, forces or stress"
        else:
            what = f"{name} = {value:.4g} exceeds its limit {limit:.4g}"
        others = f" (also: {', '.join(f[0] for f in flags[1:])})" if len(flags) > 1 else ""
        return f"step {step}: {what}{others}"

    def _react(self, obs: Observation, atoms, calc) -> None:
        name, value, limit = obs.flags[0]
        obs.message = self._message(obs.step, obs.flags)
        event = {
            "step": obs.step,
            "metric": name,
            "value": value,
            "threshold": limit,
            "flags": [f[0] for f in obs.flags],
            "message": obs.message,
        }
        self.events.append(event)
        adaptive_first = calc.symmetrize == "adaptive" and calc.mode != "average"
        if callable(self.action):
            self.action(self, event)
        elif self.action == "warn":
            warnings.warn(obs.message, InstabilityWarning, stacklevel=4)
        if adaptive_first or (self.action == "symmetrize" and calc.mode != "average"):
            obs.request = "average"
        elif self.action == "symmetrize":  # already averaging: symmetry cannot cure this
            warnings.warn(
                f"{obs.message}; persists while averaging", InstabilityWarning, stacklevel=4
            )
        elif self.action == "raise":
            obs.request = "stop"
            path = self.last_good_path
            if self.last_good is not None and path is not None:
                import ase.io

                ase.io.write(path, self.last_good, format="extxyz")
                obs.last_good = path

    def _back_off_request(self, row: dict, calc) -> Optional[str]:
        if not self.back_off or calc.mode != "average" or calc.symmetrize != "adaptive":
            return None
        limit = self._rel_forces_limit()
        self._calm = self._calm + 1 if limit is not None and row["rel_forces"] < 0.5 * limit else 0
        if self._calm >= self.patience:
            return "none"
        return None
