r"""Batched evaluation of rotated copies.

For structures :math:`x_s` and O(3) elements :math:`g_k` (matrices
:math:`R_k`) this evaluates :math:`u_{ks} = f(g_k x_s)` for every pair, with
copy index :math:`c = k S + s`:

1. the neighbour pairs of each :math:`x_s` are computed once (vesin) and shared
   by all its copies: the pair vector of copy :math:`c` is
   :math:`(r_j - r_i + S h) R_k^T`;
2. copies are built with tensor ops (gathers and one einsum), in float64, then
   cast to the model's dtype on its device;
3. copies are evaluated in nearly equal chunks (:func:`chunk_plan`), one model call and
   one backward pass per chunk (none for an adapter with
   ``non_conservative=True``: its forces and stress are direct outputs of the
   forward pass, evaluated without an autograd graph unless
   ``differentiable=True``). Forces are :math:`-\partial E / \partial r`;
   stress is :math:`V^{-1} \partial E / \partial \epsilon` at
   :math:`\epsilon = 0` for a homogeneous strain
   :math:`r \to r (1 + \epsilon)`, :math:`h \to h (1 + \epsilon)` (ASE sign,
   eV/A^3).

The responses come back in the rotated frame, stacked along axis 0, float64,
on the model's device, ready for :mod:`symmd.metrics`:

=================  =====================  ===========================
property           one structure          a list of S structures
=================  =====================  ===========================
energy             ``[K]``                ``[K, S]``
energies           ``[K, N]``             ``[K, N_total]``
forces             ``[K, N, 3]``          ``[K, N_total, 3]``
stress             ``[K, 3, 3]``          ``[K, S, 3, 3]``
extra, per atom    ``[K, N, P, *comp]``   ``[K, N_total, P, *comp]``
extra, per system  ``[K, P, *comp]``      ``[K, S, P, *comp]``
=================  =====================  ===========================

Extra outputs are the ones the model declares (:mod:`symmd.models._outputs`);
the returned :class:`~symmd.models.Responses` says each entry's kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import ase
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from ..o3 import Quadrature, check_orthogonal
from ._adapters import Adapter
from ._outputs import Extra, Responses
from ._reuse import Reuse
from ._rotate import rotate
from ._structures import Batch, Structures, as_structures, neighbor_pairs

__all__ = [
    "CPU_ATOMS_PER_CALL",
    "CPU_PAIRS_PER_CALL",
    "PROPERTIES",
    "PROPERTY_KINDS",
    "chunk_plan",
    "evaluate_rotated",
]

PROPERTIES = ("energy", "energies", "forces", "stress")
#: how each physical property transforms (see :mod:`symmd.metrics`)
PROPERTY_KINDS = {"energy": "scalar", "energies": "scalar", "forces": "vector", "stress": "rank2"}
#: CPU bounds on one model call (``batch_size=None``), chosen from measurement
#: (benchmarks/README.md, "Scaling with size and degree"): past a few hundred
#: atoms per call the per-copy cost of a PET grows (1.4x at 1024 atoms for a
#: default-size PET) as its activations outgrow the caches, while one copy per
#: call costs the same as a raw evaluation. The pair bound (``neighbour pairs``
#: of all requested lists, about 28 per atom for fcc at 4.5 A) shrinks the
#: chunks of models with denser neighbourhoods, whose activations per atom are
#: larger.
CPU_ATOMS_PER_CALL = 256
CPU_PAIRS_PER_CALL = 8192


def _expand(counts: torch.Tensor, offsets: torch.Tensor, structure_of_copy: torch.Tensor):
    """For copies of given structures, each with ``counts[s]`` items starting at
    ``offsets[s]``: ``(copy_of_item, base_item, per_copy_counts)``, vectorized."""
    per_copy = counts[structure_of_copy]
    copy_of_item = torch.repeat_interleave(
        torch.arange(len(per_copy), device=counts.device), per_copy
    )
    start_in_batch = torch.cumsum(per_copy, 0) - per_copy
    within = torch.arange(int(per_copy.sum()), device=counts.device) - start_in_batch[copy_of_item]
    return copy_of_item, offsets[structure_of_copy][copy_of_item] + within, per_copy


def _as_rotations(rotations) -> torch.Tensor:
    if isinstance(rotations, Quadrature):
        return rotations.rotations
    rot = torch.as_tensor(rotations, dtype=torch.float64)
    if rot.ndim == 2:
        rot = rot[None]
    if rot.ndim != 3 or rot.shape[1:] != (3, 3) or rot.shape[0] == 0:
        raise ValueError(f"rotations must have shape [K, 3, 3] with K >= 1, got {tuple(rot.shape)}")
    check_orthogonal(rot, "rotations")
    return rot


def chunk_plan(
    n_copies: int,
    max_atoms: int,
    device: torch.device,
    batch_size: Optional[int],
    max_pairs: int = 0,
) -> list[int]:
    """Sizes of the successive model calls for ``n_copies`` rotated copies.

    At most ``batch_size`` copies per call; ``None``: all of them on an
    accelerator; on the CPU as many as keep a call within
    ``CPU_ATOMS_PER_CALL`` atoms and ``CPU_PAIRS_PER_CALL`` neighbour pairs
    (``max_atoms`` and ``max_pairs``: the most atoms and pairs of one copy),
    and at least one. The copies are spread evenly over the fewest calls that
    respect that bound (sizes differ by at most one), so that every call has
    nearly the same shape; differing by one copy costs nothing measurable once
    TorchScript has warmed up (it switches to dynamic shapes). Layer capture
    and any other consumer of the per-call layout read it from here.
    """
    if batch_size is None:
        if device.type == "cpu":
            batch_size = max(
                1,
                min(
                    CPU_ATOMS_PER_CALL // max(1, max_atoms),
                    CPU_PAIRS_PER_CALL // max_pairs if max_pairs > 0 else n_copies,
                ),
            )
        else:
            batch_size = n_copies
    n_calls = max(1, -(-n_copies // batch_size))
    base, extra = divmod(n_copies, n_calls)
    return [base + 1] * extra + [base] * (n_calls - extra)


def _check_properties(
    properties: Sequence[str], structures: Structures, declared: Sequence[str]
) -> tuple:
    if isinstance(properties, str):
        raise TypeError(f"properties must be a sequence of names, got the string {properties!r}")
    properties = tuple(dict.fromkeys(properties))
    unknown = [p for p in properties if p not in PROPERTIES and p not in declared]
    if unknown:
        raise ValueError(
            f"the model has no output {unknown}; choose among {list(PROPERTIES)}"
            + (f" and the outputs it declares, {list(declared)}" if declared else "")
        )
    if "stress" in properties and not bool(structures.periodic.all()):
        bad = torch.nonzero(~structures.periodic).flatten().tolist()
        raise PropertyNotImplementedError(
            f"stress is only defined for fully periodic structures; structures {bad} "
            "are not periodic in all three directions"
        )
    return properties


def evaluate_rotated(
    model: Adapter,
    atoms: Union[ase.Atoms, Sequence[ase.Atoms]],
    rotations: Union[Quadrature, torch.Tensor],
    properties: Sequence[str] = ("energy", "forces"),
    batch_size: Optional[int] = None,
    differentiable: bool = False,
    reuse: Optional[Reuse] = None,
) -> Responses:
    """Evaluate ``model`` on every rotated copy of ``atoms``.

    Parameters
    ----------
    model: an adapter from :func:`symmd.models.load`.
    atoms: one ``ase.Atoms`` or a list.
    rotations: a :class:`~symmd.o3.Quadrature` or ``[K, 3, 3]`` orthogonal
        matrices (positions map as ``r -> r @ R.T``).
    properties: among ``energy``, ``energies``, ``forces``, ``stress`` and
        the extra outputs the model declares (``adapter.declared_outputs()``).
    batch_size: the most rotated copies per model call. ``None``: all copies
        at once on an accelerator; on CPU, chunks of at most about
        ``CPU_ATOMS_PER_CALL`` atoms and ``CPU_PAIRS_PER_CALL`` neighbour
        pairs (see :func:`chunk_plan`; measured in
        ``benchmarks/bench_scaling.py``), which also bounds the memory.
    differentiable: keep the autograd graph of the responses with respect to
        the model's parameters (forces and stress with ``create_graph=True``,
        so that a loss on them can be back-propagated: a double backward).
        Default ``False``: detached responses.
    reuse: a :class:`~symmd.models.Reuse` kept across the calls of one run
        (one structure): its Verlet neighbour lists and validated fixed parts
        replace the per-call ones (the same pairs; their order may differ).

    Returns float64 responses in the rotated frame on the model's device, as
    a :class:`~symmd.models.Responses` dict (see the module docstring for
    shapes; a multi-block extra output gives one entry per block).
    """
    if not isinstance(model, Adapter):
        raise TypeError(
            f"model must be an adapter, got {type(model).__name__}; wrap it first with "
            "symmd.models.load(model)"
        )
    adapter = model
    if differentiable and not adapter.differentiable:
        raise ValueError(
            f"differentiable=True needs a torch model; a {type(adapter).__name__} has no "
            "autograd graph"
        )
    structures: Structures
    if isinstance(atoms, Structures):
        structures = atoms
    elif reuse is not None and isinstance(atoms, ase.Atoms):
        structures = reuse.structures(atoms)
    else:
        structures = as_structures(atoms)
        reuse = None
    properties = _check_properties(properties, structures, adapter.declared_outputs())
    adapter.check(structures, properties)
    rot = _as_rotations(rotations)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")

    device = adapter.device
    structures = structures.to(device)
    rot = rot.to(device)
    pairs = {
        request: (
            reuse.pairs(structures, *request)
            if reuse is not None and structures.n_systems == 1
            else neighbor_pairs(structures, *request)
        ).to(device)
        for request in adapter.neighbor_requests()
    }
    n_copies = len(rot) * structures.n_systems
    max_pairs = int(torch.stack([p.counts for p in pairs.values()]).sum(0).max()) if pairs else 0
    plan = chunk_plan(n_copies, int(structures.n_atoms.max()), device, batch_size, max_pairs)
    results: dict[str, list] = {}
    kinds: dict[str, tuple[str, bool]] = {}
    start = 0
    for size in plan:
        copies = torch.arange(start, start + size, device=device)
        start += size
        out = _evaluate_chunk(adapter, structures, pairs, rot, copies, properties, differentiable)
        for key, value in out.items():
            if isinstance(value, Extra):
                kinds[key] = (value.kind, value.per_atom)
                value = value.values
            results.setdefault(key, []).append(value)
    out = _assemble(results, kinds, structures, len(rot))
    out.plan, out.pairs = plan, pairs
    return out


def _evaluate_chunk(
    adapter, structures: Structures, pairs, rot, copies, properties, differentiable=False
):
    n_sys, k = structures.n_systems, len(copies)
    rot_of_copy = rot[copies // n_sys]
    structure_of_copy = copies % n_sys
    uniform = n_sys == 1  # copies of one structure (a calculator's call): [k, n] blocks
    if uniform:
        n = int(structures.n_atoms[0])
        copy_of_atom = torch.arange(k, device=rot.device).repeat_interleave(n)
        base_atom = torch.arange(n, device=rot.device).repeat(k)
        n_atoms = structures.n_atoms.repeat(k)
        positions = rotate(structures.positions, rot_of_copy).reshape(k * n, 3)
    else:
        copy_of_atom, base_atom, n_atoms = _expand(
            structures.n_atoms, structures.offsets, structure_of_copy
        )
        positions = rotate(structures.positions[base_atom, None], rot_of_copy[copy_of_atom])[:, 0]
    cell = rotate(structures.cell[structure_of_copy], rot_of_copy)
    dtype = adapter.dtype
    positions, cell = positions.to(dtype), cell.to(dtype)

    # direct (non-conservative) outputs come from the forward pass: no graph
    # to positions or strain, and none at all unless the caller differentiates
    direct = adapter.non_conservative
    want_grad = (
        adapter.differentiable and not direct and ("forces" in properties or "stress" in properties)
    )
    strain = None
    if want_grad:
        positions.requires_grad_(True)
        leaf_positions = positions
        if "stress" in properties:
            strain = torch.zeros(k, 3, 3, dtype=dtype, device=positions.device, requires_grad=True)
            if uniform:
                strained = (positions.view(k, n, 3) @ strain).view(k * n, 3)
            else:
                strained = torch.einsum("mi,mij->mj", positions, strain[copy_of_atom])
            positions = positions + strained
            cell = cell + cell @ strain

    atom_start = torch.cumsum(n_atoms, 0) - n_atoms
    batch_pairs = {}
    for request, base in pairs.items():
        if uniform:  # the same pairs in every copy, shifted by n atoms per copy
            shift = atom_start[:, None]
            batch_pairs[request] = (
                (base.first[None] + shift).reshape(-1),
                (base.second[None] + shift).reshape(-1),
                base.shifts.repeat(k, 1),
                base.counts.repeat(k),
            )
            continue
        copy_of_pair, base_pair, counts = _expand(base.counts, base.offsets, structure_of_copy)
        shift = atom_start[copy_of_pair] - structures.offsets[structure_of_copy][copy_of_pair]
        batch_pairs[request] = (
            base.first[base_pair] + shift,
            base.second[base_pair] + shift,
            base.shifts[base_pair],
            counts,
        )
    batch = Batch(
        positions=positions,
        types=structures.types[base_atom],
        cell=cell,
        pbc=structures.pbc[structure_of_copy],
        system_index=copy_of_atom,
        n_atoms=n_atoms,
        pairs=batch_pairs,
    )
    with torch.set_grad_enabled(
        want_grad or differentiable or (torch.is_grad_enabled() and not direct)
    ):
        out = adapter(batch, properties)

    energy = out["energy"]
    if energy.shape != (len(copies),):
        raise ValueError(
            f"the model returned an energy of shape {tuple(energy.shape)}; expected "
            f"one value per structure, [{len(copies)}]"
        )
    need_forces = "forces" in properties and "forces" not in out
    need_stress = "stress" in properties and "stress" not in out
    if need_forces or need_stress:
        if not want_grad or energy.grad_fn is None:
            raise ValueError(
                "the model returned no forces/stress and its energy is not "
                "differentiable with respect to positions; return them explicitly"
            )
        inputs = [leaf_positions] if need_forces else []
        if need_stress and strain is not None:
            inputs.append(strain)
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=differentiable)
        if need_forces:
            out["forces"] = -grads[0]
        if need_stress:
            volume = torch.linalg.det(structures.cell[structure_of_copy]).abs()
            out["stress"] = grads[-1].to(torch.float64) / volume[:, None, None]

    def keep(value: torch.Tensor) -> torch.Tensor:
        return (value if differentiable else value.detach()).to(torch.float64)

    result: dict[str, Any] = {}
    for key in properties:
        if key in PROPERTIES:
            result[key] = keep(out[key])
            continue
        for label, extra in out[key].items():
            result[label] = Extra(keep(extra.values), extra.kind, extra.per_atom)
    return result


def _assemble(results, kinds, structures: Structures, n_rot: int) -> Responses:
    n_sys, n_tot = structures.n_systems, int(structures.n_atoms.sum())
    shapes = {
        "energy": (n_rot, n_sys),
        "energies": (n_rot, n_tot),
        "forces": (n_rot, n_tot, 3),
        "stress": (n_rot, n_sys, 3, 3),
    }
    out, out_kinds, out_per_atom = {}, {}, {}
    for key, chunks in results.items():
        value = torch.cat(chunks)
        if key in shapes:
            value = value.reshape(shapes[key])
            kind, per_atom = PROPERTY_KINDS[key], key in ("energies", "forces")
        else:
            kind, per_atom = kinds[key]
            value = value.reshape(n_rot, n_tot if per_atom else n_sys, *value.shape[1:])
        if structures.single and not per_atom:
            value = value[:, 0]
        out[key], out_kinds[key], out_per_atom[key] = value, kind, per_atom
    return Responses(out, out_kinds, out_per_atom)
