"""Model adapters: one call evaluates a whole :class:`~symmd.models.Batch`.

Every adapter exposes ``device``, ``dtype``, ``differentiable`` (energies
carry an autograd graph, so the engine derives forces and stress),
``neighbor_requests()`` (the ``(cutoff A, full_list)`` pairs it needs),
``declared_outputs()`` (names of extra outputs, see
:mod:`symmd.models._outputs`), ``hook_root()`` (the eager module whose layers
forward hooks can reach), ``check(structures, properties)`` and
``__call__(batch, properties)``, which returns ``energy [C]`` and, when it
has them directly, ``energies [M]``, ``forces [M, 3]`` (eV/A),
``stress [C, 3, 3]`` (eV/A^3), and ``{label: Extra}`` for each requested
extra output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import ase
import numpy as np
import torch
from ase.calculators.calculator import BaseCalculator

from ..metrics import COMPONENT_AXES, TRANSFORMABLE
from ._outputs import RENAMED, Extra, tensormap_to_dense
from ._structures import Batch, Structures, check_types

__all__ = ["Adapter", "MetatomicAdapter", "CallableAdapter", "AseAdapter"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NC_STRESS = "non_conservative_stress"


class Adapter:
    """Base class of the adapters (see the module docstring)."""

    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float64
    differentiable: bool = True
    atomic_types: Optional[list[int]] = None
    non_conservative: bool = False

    def neighbor_requests(self) -> list[tuple[float, bool]]:
        return []

    def provides(self, prop: str) -> bool:
        """Whether the model can return the physical property ``prop`` (with
        ``non_conservative=True``, stress only when it has a direct stress output)."""
        return True

    def declared_outputs(self) -> list[str]:
        """Names of the extra outputs the model declares (beyond the energy)."""
        return []

    def hook_root(self) -> torch.nn.Module:
        """The eager ``torch.nn.Module`` whose named submodules take forward hooks."""
        raise TypeError(
            f"layer spectra need an eager torch module; a {type(self).__name__} "
            "has no layers to hook"
        )

    def check(self, structures: Structures, properties: Sequence[str]) -> None:
        """Raise ValueError for elements the model does not know."""
        if self.atomic_types is not None:
            check_types(structures, self.atomic_types)

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError


def _is_per_atom(output) -> bool:
    kind = getattr(output, "sample_kind", None)
    return kind == "atom" if isinstance(kind, str) else bool(output.per_atom)


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
    (raw, without removing their net force), from the forward pass alone:
    no autograd graph is built. Every other declared output
    (``features``, last-layer features, ...) can be requested by name.
    The model may be exported (TorchScript) or eager (``AtomisticModel``
    around a ``torch.nn.Module``, e.g. a metatrain checkpoint); only an
    eager one exposes its layers to forward hooks.
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
        self.device = torch.device(
            pick_device(caps.supported_devices, None if device is None else str(device))
        )
        self.model = model.to(self.device)
        outputs = caps.outputs
        if "energy" not in outputs:
            raise ValueError(
                f"the metatomic model has no 'energy' output; its outputs are {sorted(outputs)}"
            )
        self.non_conservative = bool(non_conservative)
        names = [n for n in outputs if not (n in RENAMED and RENAMED[n] in outputs)]
        self._nc_forces = next(
            (n for n in ("non_conservative_force", "non_conservative_forces") if n in names), None
        )
        self._has_nc_stress = _NC_STRESS in outputs
        if self.non_conservative and self._nc_forces is None:
            raise ValueError(
                f"non_conservative=True but the model has no 'non_conservative_force(s)' output; "
                f"its outputs are {sorted(outputs)}; use non_conservative=False"
            )
        self._declared = {name: _is_per_atom(outputs[name]) for name in names if name != "energy"}
        self._units = {name: out.unit for name, out in outputs.items()}
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
        self._requests = [
            (float(o.engine_cutoff("angstrom")), bool(o.full_list)) for o in self._nl_options
        ]
        self._options: dict = {}  # ModelEvaluationOptions per requested properties
        from metatensor.torch import Labels

        ints = torch.arange(3, dtype=torch.int32, device=self.device)[:, None]
        self._xyz = Labels(["xyz"], ints)  # the fixed Labels of every neighbour list
        self._distance = Labels(["distance"], ints[:1] * 0)

    def neighbor_requests(self) -> list[tuple[float, bool]]:
        return list(dict.fromkeys(self._requests))

    def provides(self, prop: str) -> bool:
        return not (prop == "stress" and self.non_conservative and not self._has_nc_stress)

    def declared_outputs(self) -> list[str]:
        return list(self._declared)

    def hook_root(self) -> torch.nn.Module:
        root = getattr(self.model, "module", self.model)
        if isinstance(root, torch.jit.ScriptModule):
            raise TypeError(
                "layer spectra need an eager model, and this metatomic model is exported "
                "(TorchScript hides its layers from forward hooks); load the training "
                "checkpoint (.ckpt) instead, or diagnose the outputs it declares: "
                f"{self.declared_outputs()}"
            )
        return root

    def check(self, structures: Structures, properties: Sequence[str]) -> None:
        super().check(structures, properties)
        if self.non_conservative and "stress" in properties and not self._has_nc_stress:
            raise ValueError(
                f"stress requested with non_conservative=True but the model has no "
                f"'{_NC_STRESS}' output"
            )

    def _outputs(self, properties):
        # always per atom: the energy is then the same sum whatever else is asked
        outputs = {"energy": _model_output("eV", True)}
        if self.non_conservative and "forces" in properties and self._nc_forces is not None:
            outputs[self._nc_forces] = _model_output("eV/Angstrom", True)
        if self.non_conservative and "stress" in properties:
            outputs[_NC_STRESS] = _model_output("eV/Angstrom^3", False)
        for name in properties:
            if name in self._declared and name not in outputs:
                outputs[name] = _model_output(self._units[name], self._declared[name])
        return outputs

    def _systems(self, batch: Batch):
        from metatensor.torch import Labels, TensorBlock
        from metatomic.torch import System

        n_copies = len(batch.n_atoms)
        atom_start = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        sizes = batch.n_atoms.tolist()
        positions = batch.positions.split(sizes)
        types = batch.types.split(sizes)
        xyz, distance = self._xyz, self._distance
        blocks = {}
        for request, (first, second, shifts, counts) in batch.pairs.items():
            shifts_f = shifts.to(batch.cell.dtype)
            if n_copies == 1:  # the raw path: one copy, one cell, local indices
                lattice = shifts_f @ batch.cell[0]
                local = [first[:, None], second[:, None]]
            else:
                copy = torch.repeat_interleave(torch.arange(n_copies, device=self.device), counts)
                lattice = torch.einsum("pa,pab->pb", shifts_f, batch.cell[copy])
                start = atom_start[copy]
                local = [(first - start)[:, None], (second - start)[:, None]]
            # index_select: the cheapest differentiable gather (backward: index_add)
            vectors = (
                batch.positions.index_select(0, second)
                - batch.positions.index_select(0, first)
                + lattice
            )
            samples = torch.cat([*local, shifts], 1).to(torch.int32)
            if n_copies == 1:
                blocks[request] = ([vectors], [samples])
            else:
                split = counts.tolist()
                blocks[request] = (vectors.split(split), samples.split(split))
        names = ["first_atom", "second_atom", "cell_shift_a", "cell_shift_b", "cell_shift_c"]
        systems = []
        # Wrapping views of the batched tensors into metatomic objects: the
        # model's API takes a list of systems; no arithmetic happens here.
        for c in range(n_copies):
            system = System(types[c], positions[c], batch.cell[c], batch.pbc[c])
            for options, request in zip(self._nl_options, self._requests):
                copy_vectors, copy_samples = blocks[request]
                # the pairs of a neighbour list are unique: skip metatensor's check
                labels = Labels(names, copy_samples[c], assume_unique=True)
                block = TensorBlock(copy_vectors[c][:, :, None], labels, [xyz], distance)
                system.add_neighbor_list(options, block)
            systems.append(system)
        return systems

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, Any]:
        from metatomic.torch import ModelEvaluationOptions

        key = tuple(properties)
        options = self._options.get(key)
        if options is None:
            options = ModelEvaluationOptions(
                length_unit="angstrom", outputs=self._outputs(properties)
            )
            self._options[key] = options
        raw = self.model(self._systems(batch), options, check_consistency=False)
        n_copies = len(batch.n_atoms)
        atom_start = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
        block = raw["energy"].block()
        system = block.samples.column("system").to(torch.long)
        out: dict[str, Any] = {
            "energy": torch.zeros(n_copies, dtype=block.values.dtype, device=self.device).index_add(
                0, system, block.values[:, 0]
            )
        }
        if "energies" in properties:
            atom = atom_start[system] + block.samples.column("atom").to(torch.long)
            out["energies"] = torch.zeros(
                len(batch.types), dtype=block.values.dtype, device=self.device
            ).index_add(0, atom, block.values[:, 0])
        if self.non_conservative and self._nc_forces in raw:
            fblock = raw[self._nc_forces].block()
            atom = atom_start[
                fblock.samples.column("system").to(torch.long)
            ] + fblock.samples.column("atom").to(torch.long)
            out["forces"] = torch.zeros(
                len(batch.types), 3, dtype=fblock.values.dtype, device=self.device
            ).index_copy(0, atom, fblock.values.reshape(-1, 3))
        if self.non_conservative and _NC_STRESS in raw:
            sblock = raw[_NC_STRESS].block()
            idx = sblock.samples.column("system").to(torch.long)
            out["stress"] = torch.zeros(
                n_copies, 3, 3, dtype=sblock.values.dtype, device=self.device
            ).index_copy(0, idx, sblock.values.reshape(-1, 3, 3))
        for name in properties:
            if name in self._declared:
                if name not in raw:
                    raise ValueError(
                        f"the model declares the output {name!r} but did not return it"
                    )
                out[name] = tensormap_to_dense(
                    raw[name], name, n_copies, atom_start, len(batch.types)
                )
        return out


class CallableAdapter(Adapter):
    """A torch module or function with the batched signature

    ``f(positions [N, 3], types [N], cell [B, 3, 3], pbc [B, 3], system_index [N])
    -> {"energy": [B], optional "forces": [N, 3], "stress": [B, 3, 3],
    "energies": [N]}``, evaluated in ``dtype`` (default float64) on ``device``.
    Forces and stress come from autograd when not returned. A module is moved
    to ``device`` and ``dtype`` in place. An ``atomic_types`` attribute on the
    callable, if any, lists the elements it knows; an ``extra_outputs``
    attribute ``{name: kind}`` (kind ``"scalar"``, ``"vector"`` or
    ``"rank2"``) declares further returned outputs, each ``[N, (P,) *comp]``
    per atom or ``[B, (P,) *comp]`` per structure.
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
        extra = dict(getattr(fn, "extra_outputs", None) or {})
        bad = {k: v for k, v in extra.items() if v not in TRANSFORMABLE}
        if bad:
            raise ValueError(f"extra_outputs kinds must be among {list(TRANSFORMABLE)}, got {bad}")
        self._extra = extra

    def declared_outputs(self) -> list[str]:
        return list(self._extra)

    def hook_root(self) -> torch.nn.Module:
        if not isinstance(self.fn, torch.nn.Module):
            return super().hook_root()
        return self.fn

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, Any]:
        out = raw_out = self.fn(
            batch.positions, batch.types, batch.cell, batch.pbc, batch.system_index
        )
        if not isinstance(out, dict) or "energy" not in out:
            keys = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ValueError(f"the model must return a dict with an 'energy' entry, got {keys}")
        missing = [
            p
            for p in properties
            if p != "energy"
            and p not in out
            and p not in self._extra
            and (p == "energies" or self.non_conservative)
        ]
        if missing:
            raise ValueError(
                f"the model returned no {missing} output (it returned {sorted(out)}); "
                + (
                    "non_conservative=True needs them returned directly"
                    if self.non_conservative
                    else "return per-atom 'energies' to use them"
                )
            )
        if not self.non_conservative:
            out = {k: v for k, v in out.items() if k in ("energy", "energies", "forces", "stress")}
        out = dict(out)
        for name in properties:
            if name in self._extra:
                out[name] = {name: self._extra_block(raw_out, name, batch)}
        return out

    def _extra_block(self, raw_out: dict, name: str, batch: Batch) -> Extra:
        if name not in raw_out:
            raise ValueError(f"the model declares the output {name!r} but did not return it")
        kind = self._extra[name]
        n_comp = COMPONENT_AXES[kind]
        given = raw_out[name]
        value = given.unsqueeze(1) if given.ndim == 1 + n_comp else given
        n_atoms, n_copies = len(batch.types), len(batch.n_atoms)
        if value.ndim != 2 + n_comp or value.shape[0] not in (n_atoms, n_copies):
            raise ValueError(
                f"the output {name!r} of kind {kind} has shape {tuple(given.shape)}; "
                f"expected [{n_atoms} atoms or {n_copies} structures, (P,)" + ", 3" * n_comp + "]"
            )
        return Extra(value, kind, per_atom=value.shape[0] == n_atoms)


class AseAdapter(Adapter):
    """Any ASE calculator, evaluated copy by copy (a sequential fallback:
    one ``ase.Atoms`` and one calculator call per rotated copy; no batching)."""

    differentiable = False

    def __init__(
        self, calc: BaseCalculator, device=None, dtype=None, non_conservative: bool = False
    ):
        self.calc = calc
        self.device = torch.device("cpu")
        self.dtype = torch.float64

    def __call__(self, batch: Batch, properties: Sequence[str]) -> dict[str, Any]:
        sizes = batch.n_atoms.tolist()
        positions = batch.positions.detach().cpu().numpy()
        types = batch.types.cpu().numpy()
        cells, pbcs = batch.cell.detach().cpu().numpy(), batch.pbc.cpu().numpy()
        starts = np.cumsum([0] + sizes)
        results: dict[str, list] = {p: [] for p in ("energy", *properties)}
        for c, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
            atoms = ase.Atoms(
                numbers=types[a:b], positions=positions[a:b], cell=cells[c], pbc=pbcs[c]
            )
            atoms.calc = self.calc
            results["energy"].append(atoms.get_potential_energy())
            if "forces" in properties:
                results["forces"].append(atoms.get_forces())
            if "stress" in properties:
                results["stress"].append(atoms.get_stress(voigt=False))
            if "energies" in properties:
                results["energies"].append(atoms.get_potential_energies())
        join: dict[str, Callable[[list], np.ndarray]] = {
            "energy": np.array,
            "forces": np.concatenate,
            "stress": np.stack,
            "energies": np.concatenate,
        }
        return {k: torch.as_tensor(join[k](v), dtype=torch.float64) for k, v in results.items()}
