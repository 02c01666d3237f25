"""What the calls of one MD run can reuse: the structure's fixed parts and
Verlet neighbour lists.

An MD run evaluates one structure whose positions change a little at every
call while its atomic numbers, cell and periodicity usually stay the same. A
:class:`Reuse` (one per calculator, passed to
:func:`symmd.models.evaluate_rotated` as ``reuse=``) keeps

- the validated fixed parts of the structure (types, the model's cell,
  pbc) as tensors; they are validated again, in full, whenever
  ``atoms.numbers``, ``atoms.cell`` or ``atoms.pbc`` change. Positions are
  checked (finite) and converted at every call;
- one vesin Verlet neighbour list per requested ``(cutoff, full_list)``:
  vesin keeps the candidate pairs within ``cutoff + skin`` and rebuilds them
  when an atom moved farther than ``skin / 2`` from where they were built, or
  when the cell, the periodicity or the number of atoms changed. Every call
  gets exactly the pairs within ``cutoff`` of its own positions, as a fresh
  list would, in the order of the candidates (so a model's float32 sums may
  differ from a fresh list's in the last bit; the set of pairs never does).

Only single structures are cached (a list of structures is evaluated with
fresh lists). Not thread-safe; one per calculator.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import ase
import numpy as np
import torch

from ._structures import NeighborPairs, Structures, as_structures, check_positions

__all__ = ["Reuse"]

#: Verlet skin (A). For the shipped PET's 4.5 A cutoff on 32- and 108-atom
#: cells with thermal-size moves per call, vesin took 60 / 130-185 us per call
#: with skins from 0.5 to 2 A (no trend within noise) against 335 / 710 us
#: for a fresh list; a moderate skin keeps the candidate list (vesin's
#: filtering work) short for larger cutoffs.
SKIN = 1.0


class Reuse:
    """Per-run cache of :func:`symmd.models.evaluate_rotated` (see the module
    docstring). ``skin``: Verlet skin in A (``0``: a fresh list at every call,
    still without re-validating the fixed parts)."""

    def __init__(self, skin: float = SKIN):
        if isinstance(skin, bool) or not isinstance(skin, (int, float)) or not skin >= 0:
            raise ValueError(f"skin must be a non-negative number (A), got {skin!r}")
        self.skin = float(skin)
        self._fixed: Optional[tuple[np.ndarray, np.ndarray, np.ndarray, Structures]] = None
        self._lists: dict = {}

    def structures(self, atoms: ase.Atoms) -> Structures:
        """:func:`~symmd.models.as_structures` of ``atoms``, validating the
        cell and periodicity only when they (or the atomic numbers) changed."""
        fixed = self._fixed
        if (
            fixed is None
            or len(atoms) != len(fixed[0])
            or not np.array_equal(atoms.numbers, fixed[0])
            or not np.array_equal(atoms.cell.array, fixed[1])
            or not np.array_equal(atoms.pbc, fixed[2])
        ):
            structures = as_structures(atoms)  # validates everything
            self._fixed = (
                atoms.numbers.copy(),
                atoms.cell.array.copy(),
                atoms.pbc.copy(),
                structures,
            )
            return structures
        check_positions(atoms.positions, 0)
        positions = torch.tensor(atoms.positions, dtype=torch.float64)
        return dataclasses.replace(fixed[3], positions=positions)

    def pairs(self, structures: Structures, cutoff: float, full_list: bool) -> NeighborPairs:
        """Pairs of the single structure ``structures`` within ``cutoff`` (A),
        from the Verlet list kept for ``(cutoff, full_list)``."""
        from vesin import NeighborList

        if structures.n_systems != 1:
            raise ValueError(
                f"Reuse caches one structure, got {structures.n_systems}; evaluate lists "
                "of structures without reuse"
            )
        key = (float(cutoff), bool(full_list))
        calculator = self._lists.get(key)
        if calculator is None:
            calculator = NeighborList(cutoff=key[0], full_list=key[1], skin=self.skin)
            self._lists[key] = calculator
        i, j, shifts = calculator.compute(
            points=structures.positions.detach().cpu().numpy(),
            box=structures.cell[0].detach().cpu().numpy(),
            periodic=structures.pbc[0].cpu().numpy(),
            quantities="ijS",
            copy=True,
        )
        return NeighborPairs(
            first=torch.from_numpy(i.astype(np.int64)),
            second=torch.from_numpy(j.astype(np.int64)),
            shifts=torch.from_numpy(shifts.astype(np.int64)).reshape(-1, 3),
            counts=torch.tensor([len(i)]),
        )
