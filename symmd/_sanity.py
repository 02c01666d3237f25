r"""Physical sanity of one MD step, from its results alone (no model call).

For a step with potential energy :math:`E`, forces :math:`F_i` and kinetic
energy :math:`K` of :math:`N` atoms, :class:`SanityCheck` logs

- ``epot`` :math:`E`, ``ekin`` :math:`K`, ``etot`` :math:`E + K` (eV) and the
  kinetic ``temperature`` :math:`2K / (3 N k_B)` (K);
- ``max_force`` :math:`\max_i |F_i|` (eV/A);
- ``min_distance`` (A): the distance of the pair :math:`(i, j)` closest
  relative to its covalent contact :math:`d_{ij} / (r_i + r_j)` (ASE's
  covalent radii; periodic images included, non-periodic cell vectors
  ignored),

and flags

- ``min_distance`` when :math:`\min d_{ij} / (r_i + r_j)` falls below
  ``min_distance_factor`` (a collision; the flag's limit slot holds the
  ratio reached);
- ``max_force`` above ``threshold["max_force"]``, else above
  :math:`\max(10 \bar F, 5)` eV/A with :math:`\bar F` the baseline median;
- ``temperature`` above ``temperature_factor`` times the baseline median
  plus 100 K;
- ``energy_drift`` (``ensemble="nve"`` only): :math:`|E_{tot} -
  E_{tot}(0)| / N` above ``energy_drift`` eV/atom, with :math:`E_{tot}(0)`
  the first baseline value.

The baseline medians are those of the first checks of the run, kept by the
:class:`~symmd.Monitor` (:meth:`SanityCheck.flags` takes them).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from ase import units
from ase.data import covalent_radii

__all__ = ["SanityCheck"]


class SanityCheck:
    """The per-step physical checks of the module docstring.

    ``thresholds``: the monitor's dict (keys ``min_distance_factor``,
    ``temperature_factor``, ``energy_drift``, optionally ``max_force``);
    ``ensemble``: ``"nve"`` turns on the energy-drift check.
    """

    def __init__(self, thresholds: dict, ensemble: Optional[str]):
        self.thresholds = thresholds
        self.ensemble = ensemble

    def observe(self, results: dict, atoms) -> dict:
        """The logged fields of the module docstring for ``results`` (``energy``
        eV, ``forces`` ``[N, 3]`` eV/A) of ``atoms``, plus ``_min_ratio``, the
        smallest distance over covalent contact (for :meth:`flags`)."""
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
        row["min_distance"], row["_min_ratio"] = float("inf"), float("inf")
        if n > 1:
            i, j, d = NeighborList(cutoff=float(cutoff), full_list=False).compute(
                atoms.positions, cell, [bool(p) for p in atoms.pbc], quantities="ijd"
            )
            if len(d):
                ratio = d / (radii[i] + radii[j])
                row["min_distance"] = float(d[np.argmin(ratio)])
                row["_min_ratio"] = float(ratio.min())
        return row

    def flags(self, row: dict, n: int, baseline: dict, complete: bool) -> list:
        """``(metric, value, limit)`` of the checks ``row`` (from
        :meth:`observe`, ``n`` atoms) fails. ``baseline``: lists of the first
        checks' ``max_force``, ``temperature`` and ``etot``; ``complete``:
        whether the baseline has all its checks (the relative limits apply
        only then; the energy drift is measured from the first one)."""
        flags = []
        if row["_min_ratio"] < self.thresholds["min_distance_factor"]:
            flags.append(("min_distance", row["min_distance"], row["_min_ratio"]))
        limit_f = self.thresholds.get("max_force")
        if limit_f is None and complete:
            limit_f = max(10 * float(np.median(baseline["max_force"])), 5.0)
        if limit_f is not None and row["max_force"] > limit_f:
            flags.append(("max_force", row["max_force"], limit_f))
        if complete:
            median_t = float(np.median(baseline["temperature"]))
            limit_t = self.thresholds["temperature_factor"] * median_t + 100.0
            if row["temperature"] > limit_t:
                flags.append(("temperature", row["temperature"], limit_t))
        if self.ensemble == "nve" and baseline["etot"]:
            drift = abs(row["etot"] - baseline["etot"][0]) / n
            if drift > self.thresholds["energy_drift"]:
                flags.append(("energy_drift", drift, self.thresholds["energy_drift"]))
        return flags
