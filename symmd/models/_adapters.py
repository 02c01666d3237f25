"""Model adapters: one call evaluates a whole :class:`~symmd.models.Batch`.

Every adapter exposes ``device``, ``dtype``, ``differentiable`` (energies
carry an autograd graph, so the engine derives forces and stress),
``neighbor_requests()`` (the ``(cutoff A, full_list)`` pairs it needs),
``check(structures, properties)`` and ``__call__(batch, properties)``, which
returns ``energy [C]`` and, when it has them directly, ``energies [M]``,
``forces [M, 3]`` (eV/A) and ``stress [C, 3, 3]`` (eV/A^3).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence, Union

import ase
import numpy as np
import torch
from ase.calculators.calculator import BaseCalculator

from ._engine import Batch
from ._structures import Structures, check_types

__all__ = ["Adapter", "MetatomicAdapter", "CallableAdapter", "AseAdapter", "load"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NC_FORCES, _NC_STRESS = "non_conservative_forces", "non_conservative_stress"


class Adapter:
    """Base class of the adapters (see the module docstring)."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float64
    differentiable: bool = True
    atomic_types: Optional[list[int]] = None
    non_conservative: bool = False

    def neighbor_requests(self) -> list[tuple[float, bool]]:
        return []

    def check(self, structures: Structures, properties: Sequence[str]) -> None:
        """Raise ValueError for elements the model does not know."""
        if self.atomic_types is not None:
            check_types(structures, self.atomic_types)

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _model_output(unit: str, per_atom: bool):
    from metatomic.torch import ModelOutput

    try:
        return ModelOutput(unit=unit, sample_kind="atom" if per_atom else "system")
    except (TypeError, RuntimeError):  # older metatomic-torch: per_atom only
        return ModelOutput(unit=unit, per_atom=per_atom)


class MetatomicAdapter(Adapter):
    """An exported metatomic ``AtomisticModel``, evaluated in its own dtype.

    The neighbour lists the model requests are filled from pairs computed
    once per structure; the pair vectors are differentiable functions of the
    rotated positions and cell, so forces and stress come from one backward
    pass per chunk. With ``non_conservative=True`` the model's
    ``non_conservative_forces`` / ``non_conservative_stress`` outputs are used
    (raw, without removing their net force).
    """

    def __init__(self, model, device=None, dtype=None, non_conservative: bool = False):
        from metatomic.torch import pick_device

        caps = model.capabilities()
        self.model = model
        self.dtype = _DTYPES[caps.dtype]
        if dtype is not None and dtype != self.dtype:
            raise ValueError(
                f"dtype={dtype} differs from the metatomic model's own dtype "
                f"{caps.dtype}; metatomic models run in their own dtype, pass dtype=None"
            )
        self.device = torch.device(pick_device(caps.supported_devices, None if device is None else str(device)))
        self.model = model.to(self.device)
        outputs = caps.outputs
        if "energy" not in outputs:
            raise ValueError(
                f"the metatomic model has no 'energy' output; its outputs are {sorted(outputs)}"
            )
        self.non_conservative = bool(non_conservative)
        if self.non_conservative:
            missing = [k for k in (_NC_FORCES, _NC_STRESS) if k not in outputs]
            if _NC_FORCES in missing:
                raise ValueError(
                    f"non_conservative=True but the model has no '{_NC_FORCES}' output; "
                    f"its outputs are {sorted(outputs)}; use non_conservative=False"
                )
            self._has_nc_stress = not missing
        self.atomic_types = [int(t) for t in caps.atomic_types]
        try:
            inputs = model.requested_inputs(use_new_names=True)
        except (TypeError, RuntimeError):  # older metatomic-torch
            inputs = model.requested_inputs()
        if inputs:
            raise ValueError(
                f"the metatomic model requests extra inputs {sorted(inputs)}, which "
                "symmd does not provide"
            )
        self._nl_options = list(model.requested_neighbor_lists())
        self._requests = [(float(o.engine_cutoff("angstrom")), bool(o.full_list)) for o in self._nl_options]

    def neighbor_requests(self) -> list[tuple[float, bool]]:
        return list(dict.fromkeys(self._requests))

    def check(self, structures: Structures, properties: Sequence[str]) -> None:
        super().check(structures, properties)
        if self.non_conservative and "stress" in properties and not self._has_nc_stress:
            raise ValueError(
                f"stress requested with non_conservative=True but the model has no "
                f"'{_NC_STRESS}' output"
            )

    def _outputs(self, properties):
        outputs = {"energy": _model_output("eV", "energies" in properties)}
        if self.non_conservative and "forces" in properties:
            outputs[_NC_FORCES] = _model_output("eV/Angstrom", True)
        if self.non_conservative and "stress" in properties:
            outputs[_NC_STRESS] = _model_output("eV/Angstrom^3", False)
        return outputs

    def _systems(self, batch: Batch):
        from metatensor.torch import Labels, TensorBlock
        from metatomic.torch import System

        n_copies = len(batch.n_atoms)
        atom_start = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        sizes = batch.n_atoms.tolist()
        positions = batch.positions.split(sizes)
        types = batch.types.split(sizes)
        xyz = Labels(["xyz"], torch.arange(3, device=self.device, dtype=torch.int32)[:, None])
        distance = Labels(["distance"], torch.zeros(1, 1, device=self.device, dtype=torch.int32))
        blocks = {}
        for request, (first, second, shifts, counts) in batch.pairs.items():
            copy = torch.repeat_interleave(torch.arange(n_copies, device=self.device), counts)
            vectors = (batch.positions[second] - batch.positions[first]
                       + torch.einsum("pa,pab->pb", shifts.to(batch.cell.dtype), batch.cell[copy]))  # fmt: skip
            local = torch.stack([first - atom_start[copy], second - atom_start[copy]], 1)
            samples = torch.cat([local, shifts], 1).to(torch.int32)
            blocks[request] = (vectors.split(counts.tolist()), samples.split(counts.tolist()))
        names = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]
        systems = []
        # Wrapping views of the batched tensors into metatomic objects: the
        # model's API takes a list of systems; no arithmetic happens here.
        for c in range(n_copies):
            system = System(types[c], positions[c], batch.cell[c], batch.pbc[c])
            for options, request in zip(self._nl_options, self._requests):
                vectors, samples = blocks[request]
                block = TensorBlock(vectors[c][:, :, None], Labels(names, samples[c]), [xyz], distance)
                system.add_neighbor_list(options, block)
            systems.append(system)
        return systems

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, torch.Tensor]:
        from metatomic.torch import ModelEvaluationOptions

        options = ModelEvaluationOptions(length_unit="angstrom", outputs=self._outputs(properties))
        raw = self.model(self._systems(batch), options, check_consistency=False)
        n_copies = len(batch.n_atoms)
        atom_start = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        block = raw["energy"].block()
        system = block.samples.column("system").to(torch.long)
        out = {"energy": torch.zeros(n_copies, dtype=block.values.dtype, device=self.device).index_add(0, system, block.values[:, 0])}
        if "energies" in properties:
            atom = atom_start[system] + block.samples.column("atom").to(torch.long)
            out["energies"] = torch.zeros(len(batch.types), dtype=block.values.dtype, device=self.device).index_add(0, atom, block.values[:, 0])
        if _NC_FORCES in raw:
            fblock = raw[_NC_FORCES].block()
            atom = atom_start[fblock.samples.column("system").to(torch.long)] + fblock.samples.column("atom").to(torch.long)
            out["forces"] = torch.zeros(len(batch.types), 3, dtype=fblock.values.dtype, device=self.device).index_copy(0, atom, fblock.values.reshape(-1, 3))
        if _NC_STRESS in raw:
            sblock = raw[_NC_STRESS].block()
            idx = sblock.samples.column("system").to(torch.long)
            out["stress"] = torch.zeros(n_copies, 3, 3, dtype=sblock.values.dtype, device=self.device).index_copy(0, idx, sblock.values.reshape(-1, 3, 3))
        return out


class CallableAdapter(Adapter):
    """A torch module or function with the batched signature

    ``f(positions [N, 3], types [N], cell [B, 3, 3], pbc [B, 3], system_index [N])
    -> {"energy": [B], optional "forces": [N, 3], "stress": [B, 3, 3],
    "energies": [N]}``, evaluated in ``dtype`` (default float64) on ``device``.
    Forces and stress come from autograd when not returned. A module is moved
    to ``device`` and ``dtype`` in place. An ``atomic_types`` attribute on the
    callable, if any, lists the elements it knows.
    """

    def __init__(self, fn: Callable, device=None, dtype=None, non_conservative: bool = False):
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float64
        if isinstance(fn, torch.nn.Module):
            fn = fn.to(device=self.device, dtype=self.dtype)
        self.fn = fn
        self.non_conservative = bool(non_conservative)
        types = getattr(fn, "atomic_types", None)
        self.atomic_types = None if types is None else [int(t) for t in types]

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, torch.Tensor]:
        out = self.fn(batch.positions, batch.types, batch.cell, batch.pbc, batch.system_index)
        if not isinstance(out, dict) or "energy" not in out:
            keys = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ValueError(f"the model must return a dict with an 'energy' entry, got {keys}")
        missing = [p for p in properties if p != "energy" and p not in out
                   and (p == "energies" or self.non_conservative)]  # fmt: skip
        if missing:
            raise ValueError(
                f"the model returned no {missing} output (it returned {sorted(out)}); "
                + ("non_conservative=True needs them returned directly" if self.non_conservative
                   else "return per-atom 'energies' to use them")  # fmt: skip
            )
        if not self.non_conservative:
            out = {k: v for k, v in out.items() if k in ("energy", "energies", "forces", "stress")}
        return dict(out)


class AseAdapter(Adapter):
    """Any ASE calculator, evaluated copy by copy (a sequential fallback:
    one ``ase.Atoms`` and one calculator call per rotated copy; no batching)."""

    differentiable = False

    def __init__(self, calc: BaseCalculator, device=None, dtype=None, non_conservative: bool = False):
        self.calc = calc
        self.device = torch.device("cpu")
        self.dtype = torch.float64

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, torch.Tensor]:
        sizes = batch.n_atoms.tolist()
        positions = batch.positions.detach().cpu().numpy()
        types = batch.types.cpu().numpy()
        cells, pbcs = batch.cell.detach().cpu().numpy(), batch.pbc.cpu().numpy()
        starts = np.cumsum([0] + sizes)
        results: dict[str, list] = {p: [] for p in ("energy", *properties)}
        for c, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            atoms = ase.Atoms(numbers=types[a:b], positions=positions[a:b], cell=cells[c], pbc=pbcs[c])
            atoms.calc = self.calc
            results["energy"].append(atoms.get_potential_energy())
            if "forces" in properties:
                results["forces"].append(atoms.get_forces())
            if "stress" in properties:
                results["stress"].append(atoms.get_stress(voigt=False))
            if "energies" in properties:
                results["energies"].append(atoms.get_potential_energies())
        join = {"energy": np.array, "forces": np.concatenate, "stress": np.stack, "energies": np.concatenate}
        return {k: torch.as_tensor(join[k](v), dtype=torch.float64) for k, v in results.items()}


def _load_path(path: Union[str, os.PathLike]):
    from metatomic.torch import load_atomistic_model

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        return load_atomistic_model(path)
    except Exception as error:  # torch raises many kinds for a foreign file
        raise ValueError(
            f"{path!r} is not an exported metatomic model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); export it with "
            "metatomic.torch.AtomisticModel.save or `mtt export`"
        ) from error


def load(model, device=None, dtype: Optional[torch.dtype] = None, non_conservative: bool = False) -> Adapter:
    """Wrap ``model`` in an adapter that evaluates batches of rotated copies.

    ``model`` may be: a path to an exported metatomic model (``.pt``); a
    metatomic ``AtomisticModel``; an ASE calculator (sequential fallback); a
    torch module or callable with the batched signature of
    :class:`CallableAdapter`; or an adapter (returned as is).
    ``dtype`` applies to callables (default float64); metatomic models run in
    their own dtype. ``non_conservative=True`` takes forces (and stress) from
    the model's direct outputs instead of autograd.
    """
    if isinstance(model, Adapter):
        return model
    kwargs = dict(device=device, dtype=dtype, non_conservative=non_conservative)
    if isinstance(model, (str, os.PathLike)):
        return MetatomicAdapter(_load_path(model), **kwargs)
    from metatomic.torch import is_atomistic_model

    if isinstance(model, torch.nn.Module) and is_atomistic_model(model):
        return MetatomicAdapter(model, **kwargs)
    if isinstance(model, BaseCalculator):
        if non_conservative:
            raise ValueError("non_conservative=True does not apply to an ASE calculator")
        return AseAdapter(model, **kwargs)
    if callable(model):
        return CallableAdapter(model, **kwargs)
    raise TypeError(
        f"model must be a path to a metatomic model, an AtomisticModel, an ASE "
        f"calculator or a torch callable, got {type(model).__name__}"
    )

