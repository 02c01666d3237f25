"""Structures as float64 tensors, validated, and their shared neighbour pairs.

Rotating a structure by ``g`` maps positions ``r -> r R^T`` and cell rows
``h -> h R^T``. A pair ``(i, j, S)`` with integer cell shift ``S`` has the
vector ``r_j - r_i + S h``, which rotates the same way; the pairs and shifts
themselves do not change. So the neighbour list is computed once, here, on the
unrotated structure and serves every rotated copy.

Mixed periodicity (a slab periodic along a and b, a wire, a molecule in a box)
follows metatomic's convention: the cell vector of every non-periodic
direction is set to zero before the model sees it (ASE keeps a vacuum box
there, which is not part of the physics). A zeroed row stays zero under
``h -> h R^T``, so every rotated copy obeys the same convention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Union

import ase
import numpy as np
import torch
from ase.data import chemical_symbols

__all__ = [
    "Batch",
    "Structures",
    "NeighborPairs",
    "as_structures",
    "model_cell",
    "neighbor_pairs",
]


@dataclasses.dataclass(frozen=True)
class _Systems:
    """The fields every concatenation of systems has (see the subclasses)."""

    positions: torch.Tensor
    types: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    system_index: torch.Tensor
    n_atoms: torch.Tensor


@dataclasses.dataclass(frozen=True)
class Structures(_Systems):
    """One or more structures, concatenated (float64, CPU or the model's device).

    ``positions [N, 3]`` (A), ``types [N]`` (atomic numbers), ``cell [S, 3, 3]``
    (rows are the cell vectors; the row of every non-periodic direction is
    zero), ``pbc [S, 3]``,
    ``system_index [N]`` (which structure each atom belongs to), ``n_atoms [S]``.
    """

    single: bool

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def offsets(self) -> torch.Tensor:
        """Index of the first atom of every structure, ``[S]``."""
        return torch.cumsum(self.n_atoms, 0) - self.n_atoms

    @property
    def periodic(self) -> torch.Tensor:
        """``[S]`` bool: every direction periodic (stress is defined)."""
        return self.pbc.all(dim=1)

    def to(self, device: Union[str, torch.device]) -> Structures:
        tensors = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if f.name != "single"
        }
        return dataclasses.replace(self, **tensors)


def check_positions(positions: np.ndarray, index: int) -> None:
    """Raise ValueError naming the atoms of structure ``index`` whose
    positions ``[N, 3]`` are not finite."""
    if np.isfinite(positions).all():
        return
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    raise ValueError(
        f"structure {index} has non-finite (NaN or inf) positions for atoms "
        f"{bad[:10].tolist()}; check the integrator or the input file"
    )


def _check_atoms(atoms: ase.Atoms, index: int) -> None:
    if not isinstance(atoms, ase.Atoms):
        raise TypeError(f"structure {index} must be an ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"structure {index} is empty: it has no atoms")
    check_positions(atoms.positions, index)
    cell = atoms.cell.array
    if not np.isfinite(cell).all():
        raise ValueError(f"structure {index} has a non-finite cell {cell.tolist()}")
    for axis in np.flatnonzero(atoms.pbc):
        if np.linalg.norm(cell[axis]) == 0:
            raise ValueError(
                f"structure {index} is periodic along cell vector {axis} but that "
                "vector is zero; set atoms.cell or atoms.pbc"
            )
    periodic = cell[atoms.pbc]
    if len(periodic) and np.linalg.matrix_rank(periodic, tol=1e-6) < len(periodic):
        raise ValueError(
            f"structure {index} has linearly dependent periodic cell vectors "
            f"{periodic.tolist()} (pbc={atoms.pbc.tolist()}); fix atoms.cell"
        )


def model_cell(atoms: ase.Atoms) -> np.ndarray:
    """``[3, 3]`` cell rows as a model sees them: the rows of non-periodic
    directions zeroed (metatomic's convention; ASE's vacuum box is dropped)."""
    return np.where(np.asarray(atoms.pbc)[:, None], atoms.cell.array, 0.0)


def as_structures(atoms: Union[ase.Atoms, Sequence[ase.Atoms]]) -> Structures:
    """Validate and convert ``ase.Atoms`` (or a list) to :class:`Structures`.

    The cell rows of non-periodic directions are zeroed (see
    :func:`model_cell`), so a slab from ``ase.build.fcc111(..., vacuum=10)``
    or a molecule after ``atoms.center(vacuum=5)`` is accepted as is. Raises
    ValueError for an empty structure, non-finite positions or cell, a
    periodic direction without a cell vector, or linearly dependent periodic
    cell vectors.
    """
    single = isinstance(atoms, ase.Atoms)
    frames: list[ase.Atoms] = [atoms] if isinstance(atoms, ase.Atoms) else list(atoms)
    if not frames:
        raise ValueError("no structures given: pass an ase.Atoms or a non-empty list")
    for index, frame in enumerate(frames):
        _check_atoms(frame, index)
    n_atoms = torch.tensor([len(f) for f in frames])
    return Structures(
        positions=torch.from_numpy(np.concatenate([f.positions for f in frames])).to(torch.float64),
        types=torch.from_numpy(np.concatenate([f.numbers for f in frames])).to(torch.int32),
        cell=torch.from_numpy(np.stack([model_cell(f) for f in frames])).to(torch.float64),
        pbc=torch.from_numpy(np.stack([f.pbc for f in frames])),
        system_index=torch.repeat_interleave(torch.arange(len(frames)), n_atoms),
        n_atoms=n_atoms,
        single=single,
    )


def check_types(structures: Structures, known: Sequence[int]) -> None:
    """Raise ValueError naming any element the model does not know."""
    known_set = set(int(t) for t in known)
    present = set(torch.unique(structures.types).tolist())
    unknown = sorted(present - known_set)
    if unknown:
        names = ", ".join(
            f"{z} ({chemical_symbols[z] if 0 < z < len(chemical_symbols) else '?'})"
            for z in unknown
        )
        raise ValueError(
            f"unknown element for this model: atomic number {names}; the model "
            f"knows {sorted(known_set)}"
        )


@dataclasses.dataclass(frozen=True)
class NeighborPairs:
    """Pairs of every structure, concatenated: ``first``/``second`` global atom
    indices ``[P]``, integer ``shifts [P, 3]``, ``counts [S]`` pairs per structure."""

    first: torch.Tensor
    second: torch.Tensor
    shifts: torch.Tensor
    counts: torch.Tensor

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cumsum(self.counts, 0) - self.counts

    def to(self, device: Union[str, torch.device]) -> NeighborPairs:
        return NeighborPairs(
            self.first.to(device),
            self.second.to(device),
            self.shifts.to(device),
            self.counts.to(device),
        )


def neighbor_pairs(structures: Structures, cutoff: float, full_list: bool) -> NeighborPairs:
    """All pairs within ``cutoff`` (A) of every structure, computed once with vesin."""
    from vesin import NeighborList

    calculator = NeighborList(cutoff=float(cutoff), full_list=bool(full_list))
    positions = structures.positions.detach().cpu().numpy()
    cells = structures.cell.detach().cpu().numpy()
    pbcs = structures.pbc.cpu().numpy()
    firsts, seconds, shifts, counts = [], [], [], []
    offsets = structures.offsets.tolist()
    for s, (start, n) in enumerate(zip(offsets, structures.n_atoms.tolist())):
        i, j, shift = calculator.compute(
            points=positions[start : start + n],
            box=cells[s],
            periodic=[bool(p) for p in pbcs[s]],
            quantities="ijS",
            copy=True,
        )
        firsts.append(i.astype(np.int64) + start)
        seconds.append(j.astype(np.int64) + start)
        shifts.append(shift.astype(np.int64))
        counts.append(len(i))
    return NeighborPairs(
        first=torch.from_numpy(np.concatenate(firsts)),
        second=torch.from_numpy(np.concatenate(seconds)),
        shifts=torch.from_numpy(np.concatenate(shifts)).reshape(-1, 3),
        counts=torch.tensor(counts),
    )


@dataclasses.dataclass(frozen=True)
class Batch(_Systems):
    """A chunk of C rotated copies handed to an adapter (model dtype and device).

    ``positions [M, 3]`` and ``cell [C, 3, 3]`` are differentiable when
    gradients are needed; ``types [M]``, ``pbc [C, 3]``, ``system_index [M]``
    (copy of each atom, 0..C-1), ``n_atoms [C]``; ``pairs`` maps each requested
    ``(cutoff, full_list)`` to batch-local ``(first [P], second [P],
    shifts [P, 3], counts [C])``.
    """

    pairs: dict
