r"""Equivariance error and physical sanity during MD, with reactions.

At every ``every``-th force evaluation of its :class:`~symmd.SymmetryCalculator`
(starting with the first) the monitor draws ``m = rotations`` Haar-random
O(3) elements :math:`g_j` and evaluates them in one batched call. With
:math:`z_j` the back-transformed responses, the sample variance

.. math:: \widehat{A^2} = \frac{1}{m - 1} \sum_j \|z_j - \bar z\|^2

is an unbiased estimate of :math:`A^2` (the unrotated evaluation is left out:
it would bias the estimate upwards by :math:`\|z(e) - \Pi\|^2`). Its standard
error is the Gaussian estimate
:math:`\widehat{A^2} \sqrt{2 / ((m - 1) n_c)}` with :math:`n_c` the number of
scalar components (1 for the energy, :math:`3N` for the forces, 9 for the
stress). In ``"average"`` mode the quadrature's own errors are used instead
(no extra evaluation). The force metric is the RMS over atoms,
:math:`A_F = (\frac1N \sum_i A_i^2)^{1/2}`, also relative to the RMS force.

Every step (no model call) it also checks the physics: non-finite values, the
shortest interatomic distance against ``min_distance_factor`` times the sum of
covalent radii (collapse), the largest force, a temperature jump, and, with
``ensemble="nve"``, the drift of the total energy. Thresholds that are not
given are taken relative to the run's own baseline, the median over the first
``baseline`` checks.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Callable
from typing import Optional, Union

import numpy as np
import torch
from ase import units
from ase.data import covalent_radii

from .errors import InstabilityError
from .metrics import sample_error
from .o3 import random_o3

__all__ = ["LOG_FIELDS", "InstabilityWarning", "Monitor"]

LOG_FIELDS = [
    "step",
    "time_fs",
    "mode",
    "epot",
    "ekin",
    "etot",
    "temperature",
    "max_force",
    "min_distance",
    "a2_energy",
    "a2_energy_se",
    "a2_forces",
    "a2_forces_se",
    "a_forces_rms",
    "a_forces_max",
    "rel_forces",
    "a2_stress",
    "a2_stress_se",
    "flags",
]


class InstabilityWarning(UserWarning):
    """A monitored MD step failed a check with ``action="warn"``."""


class Monitor:
    """Watch a :class:`~symmd.SymmetryCalculator` during MD.

    Parameters
    ----------
    every: check every ``every``-th force evaluation (the first included).
    rotations: Haar-random extra evaluations per check (>= 2), one batch.
    threshold: ``None`` (relative to the run's baseline: ``baseline_factor``
        times the baseline median relative force error), a float (relative
        force error :math:`A_F/F_{rms}`), or a dict with any of the keys
        ``rel_forces``, ``a_forces_rms`` (eV/A), ``energy`` (eV), ``stress``
        (eV/A^3), ``max_force`` (eV/A), ``min_distance_factor``,
        ``temperature_factor``, ``energy_drift`` (eV/atom).
    action: ``"warn"``, ``"raise"`` (:class:`~symmd.InstabilityError`),
        ``"symmetrize"`` (switch the calculator to ``"average"``) or a callable
        ``action(monitor, event)``.
    log: CSV path (one row per check, flushed) or None.
    seed: seeds the rotations (default: the calculator's seed).
    ensemble: ``"nve"`` turns on the energy-drift check.
    timestep: MD time step in fs, for the ``time_fs`` column.
    last_good: path where the last frame that passed every check is written
        (extxyz) when ``action="raise"`` stops the run; default
        ``<log>.last_good.extxyz`` when a log is given.
    back_off: in adaptive use, switch averaging off again after ``patience``
        checks below half the threshold (hysteresis).
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
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
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
        self.every, self.rotations, self.action, self.seed = every, rotations, action, seed
        self.thresholds = (
            {"rel_forces": float(threshold)}
            if isinstance(threshold, (int, float))
            else dict(threshold or {})
        )
        self.thresholds.setdefault("min_distance_factor", 0.6)
        self.thresholds.setdefault("temperature_factor", 3.0)
        self.thresholds.setdefault("energy_drift", 0.05)
        self.ensemble, self.timestep = ensemble, timestep
        self.baseline, self.baseline_factor = baseline, baseline_factor
        self.back_off, self.patience = back_off, patience
        self.log = None if log is None else os.fspath(log)
        self.last_good_path = (
            last_good
            if last_good is not None
            else (None if log is None else f"{self.log}.last_good.extxyz")
        )
        self.history: list[dict] = []
        self.events: list[dict] = []
        self.calc = None
        self.last_good = None
        self._rng = None
        self._window: dict[str, list] = {
            "rel_forces": [],
            "max_force": [],
            "temperature": [],
            "etot": [],
        }
        self._calm = 0

    # -- wiring -----------------------------------------------------------
    def attach(self, calc) -> None:
        """Called by the calculator that drives this monitor."""
        self.calc = calc
        self._rng = np.random.default_rng(self.seed if self.seed is not None else calc.seed)
        if self.log is not None:
            with open(self.log, "w", newline="") as handle:
                csv.writer(handle).writerow(LOG_FIELDS)

    def _write(self, row: dict) -> None:
        self.history.append(row)
        if self.log is not None:
            with open(self.log, "a", newline="") as handle:
                csv.writer(handle).writerow([row.get(k, "") for k in LOG_FIELDS])
                handle.flush()

    # -- measurements -----------------------------------------------------
    def estimate(self, calc, atoms, props) -> dict:
        """Unbiased squared equivariance errors and standard errors for this step."""
        res = calc.results
        if calc.mode == "average":  # the quadrature already measured A
            a_f = np.asarray(res["equivariance_error_forces"])
            row = {
                "a2_energy": res["equivariance_error_energy"] ** 2,
                "a2_energy_se": 0.0,
                "a2_forces": float(np.mean(a_f**2)),
                "a2_forces_se": 0.0,
                "a_forces_max": float(a_f.max()),
            }
            if "equivariance_error_stress" in res:
                row.update(a2_stress=res["equivariance_error_stress"] ** 2, a2_stress_se=0.0)
            return row
        q = random_o3(self.rotations, self._rng)
        keys = [p for p in ("energy", "forces", "stress") if p in props]
        out = calc.evaluate(atoms, q, keys)
        row = {}
        for key in keys:
            a2, se = sample_error(out[key], q, out.kinds[key])
            if key == "forces":
                n = a2.shape[0]
                row.update(
                    a2_forces=float(a2.mean()),
                    a2_forces_se=float(torch.sqrt((se**2).sum()) / n),
                    a_forces_max=float(a2.clamp_min(0).sqrt().max()),
                )
            else:
                row.update({f"a2_{key}": float(a2), f"a2_{key}_se": float(se)})
        res["equivariance_error_energy"] = math.sqrt(max(row["a2_energy"], 0.0))
        res["equivariance_error_forces"] = np.sqrt(
            np.clip(sample_error(out["forces"], q, "vector")[0].cpu().numpy(), 0, None)
        )
        if "a2_stress" in row:
            res["equivariance_error_stress"] = math.sqrt(max(row["a2_stress"], 0.0))
        return row

    def _physics(self, calc, atoms) -> dict:
        from vesin import NeighborList

        forces = calc.results["forces"]
        epot = calc.results["energy"]
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
        if n > 1 and np.isfinite(atoms.positions).all():
            i, j, d = NeighborList(cutoff=float(cutoff), full_list=False).compute(
                atoms.positions, atoms.cell.array, [bool(p) for p in atoms.pbc], quantities="ijd"
            )
            ratio = d / (radii[i] + radii[j]) if len(d) else np.array([np.inf])
            row["min_distance"] = float(d[np.argmin(ratio)]) if len(d) else float("inf")
            row["_min_ratio"] = float(ratio.min())
        else:
            row["min_distance"], row["_min_ratio"] = float("inf"), float("inf")
        return row

    # -- the check -------------------------------------------------------
    def check(self, calc, atoms, props) -> None:
        """Run by the calculator after every evaluation."""
        step = calc.n_calls - 1
        row = {
            "step": step,
            "mode": calc.mode,
            "time_fs": step * self.timestep if self.timestep is not None else float("nan"),
        }
        finite = (
            all(
                np.isfinite(np.asarray(v)).all()
                for k, v in calc.results.items()
                if k in ("energy", "forces", "stress")
            )
            and np.isfinite(atoms.positions).all()
        )
        flags = [] if finite else [("non_finite", float("nan"), float("nan"))]
        if finite:
            row.update(self._physics(calc, atoms))
            flags += self._sanity_flags(row, len(atoms))
        measured = finite and step % self.every == 0
        if measured:
            row.update(self.estimate(calc, atoms, props))
            f_rms = float(np.sqrt(np.mean(np.sum(calc.results["forces"] ** 2, axis=1))))
            row["a_forces_rms"] = math.sqrt(max(row["a2_forces"], 0.0))
            row["rel_forces"] = row["a_forces_rms"] / f_rms if f_rms > 0 else 0.0
            flags += self._error_flags(row)
            self._update_baseline(row)
        row.pop("_min_ratio", None)
        row["flags"] = ";".join(name for name, _, _ in flags)
        if measured or flags:
            self._write(row)
        if flags:
            self._react(step, flags, atoms)
        else:
            self.last_good = atoms.copy()
            if measured:
                self._maybe_back_off(row)

    def _limit(self, key: str):
        if key in self.thresholds:
            return self.thresholds[key]
        window = self._window.get(key, [])
        if len(window) < self.baseline:
            return None
        return float(np.median(window))

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
        base_t = (
            None
            if len(self._window["temperature"]) < self.baseline
            else float(np.median(self._window["temperature"]))
        )
        if (
            base_t is not None
            and row["temperature"] > self.thresholds["temperature_factor"] * base_t + 100.0
        ):
            flags.append(
                (
                    "temperature",
                    row["temperature"],
                    self.thresholds["temperature_factor"] * base_t + 100.0,
                )
            )
        if self.ensemble == "nve" and self._window["etot"]:
            drift = abs(row["etot"] - self._window["etot"][0]) / n
            if drift > self.thresholds["energy_drift"]:
                flags.append(("energy_drift", drift, self.thresholds["energy_drift"]))
        return flags

    def _error_flags(self, row: dict) -> list:
        flags = []
        if "rel_forces" in self.thresholds:
            limit = self.thresholds["rel_forces"]
        else:
            base = self._limit("rel_forces")
            limit = None if base is None else self.baseline_factor * max(base, 1e-3)
        if limit is not None and row["rel_forces"] > limit:
            flags.append(("rel_forces", row["rel_forces"], limit))
        for key, metric in (
            ("a_forces_rms", "a_forces_rms"),
            ("energy", "a2_energy"),
            ("stress", "a2_stress"),
        ):
            if key in self.thresholds and metric in row:
                value = row[metric] if key == "a_forces_rms" else math.sqrt(max(row[metric], 0.0))
                if value > self.thresholds[key]:
                    flags.append((key, value, self.thresholds[key]))
        return flags

    def _update_baseline(self, row: dict) -> None:
        if len(self._window["rel_forces"]) < self.baseline:
            for key in self._window:
                self._window[key].append(row[key])

    # -- reactions -------------------------------------------------------
    def _react(self, step: int, flags: list, atoms) -> None:
        name, value, limit = flags[0]
        if name == "min_distance":  # a lower bound: value in A, limit is the ratio reached
            factor = self.thresholds["min_distance_factor"]
            what = f"{name} = {value:.4g} A is below {factor:g} x the sum of covalent radii (ratio {limit:.3g})"
        else:
            what = f"{name} = {value:.4g} exceeds its limit {limit:.4g}"
        message = f"step {step}: {what}" + (
            f" (also: {', '.join(f[0] for f in flags[1:])})" if len(flags) > 1 else ""
        )
        event = {
            "step": step,
            "metric": name,
            "value": value,
            "threshold": limit,
            "flags": [f[0] for f in flags],
            "message": message,
        }
        self.events.append(event)
        if callable(self.action):
            self.action(self, event)
        elif self.action == "warn":
            warnings.warn(message, InstabilityWarning, stacklevel=3)
        elif self.action == "symmetrize":
            self._switch("average", message)
        else:
            if self.last_good is not None and self.last_good_path is not None:
                import ase.io

                ase.io.write(self.last_good_path, self.last_good, format="extxyz")
            raise InstabilityError(message, step=step, metric=name, value=value, threshold=limit)

    def _switch(self, mode: str, reason: str) -> None:
        calc = self.calc
        if calc.mode == mode:
            return
        self._write(
            {"step": calc.n_calls - 1, "mode": mode, "flags": f"switch:{calc.mode}->{mode}"}
        )
        calc.set_mode(mode, reason)
        self._calm = 0

    def _maybe_back_off(self, row: dict) -> None:
        if not self.back_off or self.calc.mode != "average" or self.calc.symmetrize != "adaptive":
            return
        limit = self.thresholds.get("rel_forces") or (
            None
            if self._limit("rel_forces") is None
            else self.baseline_factor * max(self._limit("rel_forces"), 1e-3)
        )
        self._calm = self._calm + 1 if limit is not None and row["rel_forces"] < 0.5 * limit else 0
        if self._calm >= self.patience:
            self._switch(
                "none", f"relative force error below half the threshold for {self.patience} checks"
            )
