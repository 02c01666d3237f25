r"""The TorchScript module inside an exported symmd model (:func:`symmd.export`).

For each system :math:`x` the engine passes (with its own neighbour lists),
the module builds the rotated copies :math:`g_k x` with
:func:`symmd.models.rotate` (positions, cell rows and the engine's pair
vectors, :math:`r \to r R_k^T`; the pair lists are reused, only their vectors
rotate, and they stay in the engine's autograd graph, which links them to its
positions and cell, so no neighbour list is re-registered), evaluates the wrapped model on them in chunks of ``batch_size``
copies (one model call per chunk), and returns, in float64 and then the
model's dtype,

- ``energy``: :math:`\sum_k w_k E(g_k x)` (per system, or per atom when
  asked); the engine differentiates it, and the gradient flows through the
  rotation, so forces and virial are those of the averaged energy;
- ``non_conservative_force``: :math:`\sum_k w_k F(g_k x) R_k`;
- ``non_conservative_stress``: :math:`\sum_k w_k R_k^T S(g_k x) R_k`,

with :func:`symmd.metrics.back_rotate` and :func:`symmd.metrics.weighted_sum`.
With the identity as the only "rotation" (modes ``"none"``/``"project"``)
these are the raw predictions, and the engine's systems are passed to the
model as they are (no copies: the raw model's cost, bitwise its outputs).

Monitoring: on every ``monitor_every``-th call (the first included),
``n_draws`` Haar-random O(3) elements :math:`h_j` (a uniform unit quaternion
times a random sign) are evaluated, and
:func:`symmd.metrics.sample_variance` of :math:`E(h_j x)` (and of
:math:`F(h_j x) h_j` for non-conservative forces) gives the unbiased
:math:`\widehat{A^2}`; the published value is
:math:`\sqrt{\max(\widehat{A^2}, 0)}`, held until the next check. The draws
need no gradient (energies and direct forces are forward outputs), so on a
CPU they are evaluated in their own forward-only call without an autograd
graph, which costs less than joining the differentiated batch (2 draws of
32-108 atoms: 0.55-0.61 of a raw call, against 1.4-1.8 for 2 copies joined
to a differentiated batch; benchmarks/README.md, "The cost of watching"); on
an accelerator, where a few more copies in a call cost almost nothing, they
join the step's batch.
"""

from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import ModelOutput, NeighborListOptions, System

from .metrics import back_rotate, sample_variance, weighted_sum
from .models import rotate
from .projection import remove_rigid


def haar_o3(n: int, generator: torch.Generator, proper: bool) -> torch.Tensor:
    """``n`` Haar-random elements of SO(3) (``proper``) or O(3), float64 CPU
    ``[n, 3, 3]``: a normalized Gaussian quaternion (uniform on the
    3-sphere) times an independent random sign. TorchScript-compatible."""
    q = torch.randn([n, 4], generator=generator, dtype=torch.float64)
    q = q / torch.linalg.norm(q, dim=1, keepdim=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], 1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], 1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1),
        ],
        1,
    )
    if proper:
        return rot
    sign = torch.where(
        torch.rand([n], generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0
    ).to(torch.float64)
    return rot * sign[:, None, None]


def even_chunks(n: int, most: int) -> List[int]:
    """``n`` copies in the fewest calls of at most ``most``, sizes differing by at
    most one (the plan of :func:`symmd.models.chunk_plan`, which TorchScript
    cannot compile: it reads a module constant)."""
    n_calls = max(1, (n + most - 1) // most)
    base = n // n_calls
    extra = n - base * n_calls
    return [base + 1] * extra + [base] * (n_calls - extra)


def _copy_index(blocks: List[TensorBlock], offsets: List[int], device: torch.device):
    """Global copy index of every row of the per-chunk ``blocks``."""
    index: List[torch.Tensor] = []
    for i in range(len(blocks)):
        index.append(blocks[i].samples.column("system").to(torch.long) + offsets[i])
    return torch.cat(index).to(device)


def _atom_index(blocks: List[TensorBlock], device: torch.device):
    index: List[torch.Tensor] = []
    for block in blocks:
        index.append(block.samples.column("atom").to(torch.long))
    return torch.cat(index).to(device)


def _mask(n_sys: int, n_max: int, system: torch.Tensor, atom: torch.Tensor) -> torch.Tensor:
    """``[n_sys, n_max]`` bool, true at the (system, atom) pairs given."""
    mask = torch.zeros(n_sys, n_max, dtype=torch.bool, device=system.device)
    return mask.index_put([system, atom], torch.ones_like(system, dtype=torch.bool))


def _full_mask(systems: List[System], device: torch.device) -> torch.Tensor:
    n_atoms = torch.tensor([len(s) for s in systems], device=device)
    n_max = int(n_atoms.max())
    return torch.arange(n_max, device=device)[None, :] < n_atoms[:, None]


class SymmetrizedEnergy(torch.nn.Module):
    """Average, project or pass through the energy of ``model`` over O(3).

    ``model``: the inner module of a metatomic ``AtomisticModel``;
    ``rotations [K, 3, 3]`` and ``weights [K]`` (float64): the rule, used in
    mode ``"average"``; ``nc_force`` / ``nc_stress``: the wrapped model's
    names of those outputs (``""`` when it has none); ``batch_size`` <= 0:
    :func:`symmd.models.chunk_plan`'s default; ``monitor_every`` <= 0: no
    monitoring. See the module docstring for the mathematics.
    """

    rotations: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        model: torch.nn.Module,
        rotations: torch.Tensor,
        weights: torch.Tensor,
        mode: str,
        reorient: bool,
        batch_size: int,
        monitor_every: int,
        n_draws: int,
        nc_force: str,
        nc_stress: str,
        seed: int,
        atoms_per_call: int = 1024,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("rotations", rotations.to(torch.float64))
        self.register_buffer("weights", weights.to(torch.float64))
        self.mode = mode
        self.reorient = reorient
        self.batch_size = batch_size
        self.monitor_every = monitor_every
        self.n_draws = n_draws
        self.nc_force = nc_force
        self.nc_stress = nc_stress
        self.seed = seed
        self.atoms_per_call = atoms_per_call
        self.calls = 0
        # "auto": draws join the step's batch on an accelerator, are evaluated
        # apart without a graph on a CPU; "join" / "apart" force either
        self.join_draws = "auto"
        self.held_energy_a2 = torch.zeros(0, dtype=torch.float64)
        self.held_force_a2 = torch.zeros(0, 0, dtype=torch.float64)
        self._nl: List[NeighborListOptions] = []
        for options in model.requested_neighbor_lists():  # type: ignore[operator]
            copied = NeighborListOptions(options.cutoff, options.full_list, options.strict)
            for requestor in options.requestors():
                copied.add_requestor(requestor)
            self._nl.append(copied)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._nl

    def _rule(self, monitored: bool, generator: torch.Generator) -> torch.Tensor:
        if self.mode == "average":
            rot = self.rotations
            if self.reorient:
                rot = rot @ haar_o3(1, generator, True).to(rot.device)
        else:
            rot = torch.eye(3, dtype=torch.float64, device=self.rotations.device)[None]
        if monitored:
            draws = haar_o3(self.n_draws, generator, False).to(rot.device)
            rot = torch.cat([rot, draws])
        return rot

    def _copies(self, systems: List[System], rot: torch.Tensor) -> List[System]:
        copies: List[System] = []
        for system in systems:
            dtype = system.positions.dtype
            r = rot.to(system.positions.device)
            positions = rotate(system.positions.to(torch.float64), r).to(dtype)
            cell = rotate(system.cell.to(torch.float64), r).to(dtype)
            options = system.known_neighbor_lists()
            blocks: List[TensorBlock] = []
            vectors: List[torch.Tensor] = []
            for option in options:
                block = system.get_neighbor_list(option)
                blocks.append(block)
                # not detached: the engine's pair vectors carry its autograd graph
                # to its positions and cell, and the rotation joins that graph
                v = block.values[:, :, 0].to(torch.float64)
                vectors.append(rotate(v, r).to(dtype))
            # unbind, not indexing: its backward is one stack, where K index
            # backwards would each fill a [K, ...] tensor
            positions_k = positions.unbind(0)
            cell_k = cell.unbind(0)
            vectors_k: List[List[torch.Tensor]] = []
            for v in vectors:
                vectors_k.append([t for t in v.unsqueeze(-1).unbind(0)])
            for k in range(r.shape[0]):
                copy = System(system.types, positions_k[k], cell_k[k], system.pbc)
                for i in range(len(options)):
                    block = blocks[i]
                    rotated = TensorBlock(
                        vectors_k[i][k],
                        block.samples,
                        block.components,
                        block.properties,
                    )
                    copy.add_neighbor_list(options[i], rotated)
                copies.append(copy)
        return copies

    def _selected(self, selected: Optional[Labels], n_rot: int, start: int, stop: int):
        if selected is None:
            return selected
        values = selected.values.to(torch.long)
        k = torch.arange(n_rot, device=values.device)
        copy = (values[:, 0:1] * n_rot + k[None, :]).reshape(-1)
        atom = values[:, 1:2].expand(-1, n_rot).reshape(-1)
        keep = (copy >= start) & (copy < stop)
        rows = torch.stack([copy[keep] - start, atom[keep]], 1).to(torch.int32)
        return Labels(["system", "atom"], rows)

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        result: Dict[str, TensorMap] = {}
        if len(systems) == 0:
            return result
        device = systems[0].positions.device
        dtype = systems[0].positions.dtype
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.calls)
        monitored = self.monitor_every > 0 and self.calls % self.monitor_every == 0
        self.calls += 1
        joined = monitored and (
            self.join_draws == "join" or (self.join_draws == "auto" and device.type != "cpu")
        )  # see the module docstring
        rot = self._rule(joined, generator).to(device)
        n_rot = rot.shape[0]
        n_main = n_rot - self.n_draws if joined else n_rot
        w = self.weights.to(device) if self.mode == "average" else torch.ones(1).to(rot)
        n_sys = len(systems)
        n_max = max([len(s) for s in systems])

        per_atom = "energy" in outputs and outputs["energy"].sample_kind == "atom"
        want_force = self.nc_force != "" and (
            "non_conservative_force" in outputs
            or (monitored and "symmd::force_equivariance_error" in outputs)
        )
        want_stress = self.nc_stress != "" and "non_conservative_stress" in outputs
        inner: Dict[str, ModelOutput] = {
            "energy": ModelOutput(sample_kind="atom" if per_atom else "system")
        }
        if want_force:
            inner[self.nc_force] = ModelOutput(sample_kind="atom")
        if want_stress:
            inner[self.nc_stress] = ModelOutput(sample_kind="system")

        if self.mode == "average" or joined:
            copies = self._copies(systems, rot)
        else:  # the identity is the only rotation: the engine's systems are the copies
            copies = systems
        n_copies = len(copies)
        batch_size = self.batch_size
        if batch_size <= 0:  # symmd.models.chunk_plan's default
            batch_size = n_copies
            if device.type == "cpu":
                batch_size = max(1, self.atoms_per_call // max(1, n_max))
        raw: Dict[str, List[TensorBlock]] = {}
        for name in inner.keys():
            empty: List[TensorBlock] = []
            raw[name] = empty
        offsets: List[int] = []
        start = 0
        for size in even_chunks(n_copies, batch_size):
            stop = start + size
            chunk_sel = self._selected(selected_atoms, n_rot, start, stop)
            out = self.model(copies[start:stop], inner, chunk_sel)
            for name in inner.keys():
                raw[name].append(out[name].block())
            offsets.append(start)
            start = stop

        # energies: [n_rot, S] per copy, dense [n_rot, S, n_max] per atom
        e_blocks = raw["energy"]
        copy_of_row = _copy_index(e_blocks, offsets, device)
        e_rows = torch.cat([b.values[:, 0] for b in e_blocks]).to(torch.float64)
        energy = torch.zeros(n_copies, dtype=torch.float64, device=device)
        energy = energy.index_add(0, copy_of_row, e_rows).reshape(n_sys, n_rot).transpose(0, 1)
        sys_of_row = copy_of_row // n_rot
        k_of_row = copy_of_row % n_rot
        keys = Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device))

        if joined:
            self.held_energy_a2 = sample_variance(energy[n_main:].detach(), 0)
        if "energy" in outputs:
            props = e_blocks[0].properties
            if per_atom:
                atom = _atom_index(e_blocks, device)
                dense = torch.zeros(n_rot, n_sys, n_max, dtype=torch.float64, device=device)
                dense = dense.index_put([k_of_row, sys_of_row, atom], e_rows)
                mask = _mask(n_sys, n_max, sys_of_row, atom)
                average = weighted_sum(w, dense[:n_main])[mask]
                samples = Labels(["system", "atom"], torch.nonzero(mask).to(torch.int32))
            else:
                average = weighted_sum(w, energy[:n_main])
                samples = Labels(
                    ["system"], torch.arange(n_sys, dtype=torch.int32, device=device)[:, None]
                )
            block = TensorBlock(average.to(dtype)[:, None], samples, [], props)
            result["energy"] = TensorMap(keys, [block])

        if want_force:
            f_blocks = raw[self.nc_force]
            f_copy = _copy_index(f_blocks, offsets, device)
            f_atom = _atom_index(f_blocks, device)
            f_rows = torch.cat([b.values[:, :, 0] for b in f_blocks]).to(torch.float64)
            dense = torch.zeros(n_rot, n_sys, n_max, 3, dtype=torch.float64, device=device)
            dense = dense.index_put([f_copy % n_rot, f_copy // n_rot, f_atom], f_rows)
            mask = _mask(n_sys, n_max, f_copy // n_rot, f_atom)
            if joined:
                z = back_rotate(dense[n_main:], rot[n_main:], 1)
                self.held_force_a2 = sample_variance(z.detach(), 1)
            if "non_conservative_force" in outputs:
                forces = weighted_sum(w, back_rotate(dense[:n_main], rot[:n_main], 1))
                if self.mode == "project":
                    forces = self._project(systems, forces)
                block = TensorBlock(
                    forces[mask].to(dtype)[:, :, None],
                    Labels(["system", "atom"], torch.nonzero(mask).to(torch.int32)),
                    f_blocks[0].components,
                    f_blocks[0].properties,
                )
                result["non_conservative_force"] = TensorMap(keys, [block])

        if want_stress:
            s_blocks = raw[self.nc_stress]
            s_copy = _copy_index(s_blocks, offsets, device)
            s_rows = torch.cat([b.values[:, :, :, 0] for b in s_blocks]).to(torch.float64)
            dense = torch.zeros(n_rot, n_sys, 3, 3, dtype=torch.float64, device=device)
            dense = dense.index_put([s_copy % n_rot, s_copy // n_rot], s_rows)
            stress = weighted_sum(w, back_rotate(dense[:n_main], rot[:n_main], 2))
            if self.mode == "project":
                stress = 0.5 * (stress + stress.transpose(1, 2))
            block = TensorBlock(
                stress.to(dtype)[:, :, :, None],
                Labels(["system"], torch.arange(n_sys, dtype=torch.int32, device=device)[:, None]),
                s_blocks[0].components,
                s_blocks[0].properties,
            )
            result["non_conservative_stress"] = TensorMap(keys, [block])

        if monitored and not joined:
            draws = haar_o3(self.n_draws, generator, False).to(device)
            self._monitor_apart(systems, draws, want_force, selected_atoms, batch_size)
        self._diagnostics(systems, outputs, result, keys, selected_atoms)
        return result

    def _monitor_apart(
        self,
        systems: List[System],
        draws: torch.Tensor,
        want_force: bool,
        selected_atoms: Optional[Labels],
        batch_size: int,
    ):
        r"""The monitor's ``draws [m, 3, 3]``, evaluated without an autograd
        graph in calls of their own; sets the held :math:`\widehat{A^2}`."""
        device = systems[0].positions.device
        n_sys = len(systems)
        n_max = max([len(s) for s in systems])
        m = draws.shape[0]
        inner: Dict[str, ModelOutput] = {"energy": ModelOutput(sample_kind="system")}
        if want_force:
            inner[self.nc_force] = ModelOutput(sample_kind="atom")
        with torch.no_grad():
            copies = self._copies(systems, draws)
            e_blocks: List[TensorBlock] = []
            f_blocks: List[TensorBlock] = []
            offsets: List[int] = []
            start = 0
            for size in even_chunks(len(copies), batch_size):
                stop = start + size
                chunk_sel = self._selected(selected_atoms, m, start, stop)
                out = self.model(copies[start:stop], inner, chunk_sel)
                e_blocks.append(out["energy"].block())
                if want_force:
                    f_blocks.append(out[self.nc_force].block())
                offsets.append(start)
                start = stop
            copy = _copy_index(e_blocks, offsets, device)
            rows = torch.cat([b.values[:, 0] for b in e_blocks]).to(torch.float64)
            energy = torch.zeros(len(copies), dtype=torch.float64, device=device)
            energy = energy.index_add(0, copy, rows).reshape(n_sys, m).transpose(0, 1)
            self.held_energy_a2 = sample_variance(energy, 0)
            if want_force:
                f_copy = _copy_index(f_blocks, offsets, device)
                f_atom = _atom_index(f_blocks, device)
                f_rows = torch.cat([b.values[:, :, 0] for b in f_blocks]).to(torch.float64)
                dense = torch.zeros(m, n_sys, n_max, 3, dtype=torch.float64, device=device)
                dense = dense.index_put([f_copy % m, f_copy // m, f_atom], f_rows)
                self.held_force_a2 = sample_variance(back_rotate(dense, draws, 1), 1)

    def _isolated(self, system: System) -> bool:
        """No periodic direction, or none that any neighbour pair crosses (a
        cluster in the vacuum box that engines such as i-PI require): its
        energy does not change under rigid rotations, so the torque goes."""
        if not bool(system.pbc.any()):
            return True
        for option in system.known_neighbor_lists():
            shifts = system.get_neighbor_list(option).samples.values[:, 2:5]
            if bool((shifts != 0).any()):
                return False
        return True

    def _project(self, systems: List[System], forces: torch.Tensor) -> torch.Tensor:
        projected: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            n = len(system)
            f = remove_rigid(forces[s, :n], system.positions.detach(), self._isolated(system))
            projected.append(torch.cat([f, forces[s, n:]]))
        return torch.stack(projected)

    def _diagnostics(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        result: Dict[str, TensorMap],
        keys: Labels,
        selected_atoms: Optional[Labels],
    ):
        device = systems[0].positions.device
        dtype = systems[0].positions.dtype
        n_sys = len(systems)
        a2 = self.held_energy_a2.to(device)
        if a2.shape[0] != n_sys:  # no check yet for this many systems
            a2 = torch.full([n_sys], float("nan"), dtype=torch.float64, device=device)
        a_energy = a2.clamp_min(0.0).sqrt()
        system_samples = Labels(
            ["system"], torch.arange(n_sys, dtype=torch.int32, device=device)[:, None]
        )
        if "symmd::equivariance_error" in outputs:
            block = TensorBlock(
                a_energy.to(dtype)[:, None],
                system_samples,
                [],
                Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=device)),
            )
            result["symmd::equivariance_error"] = TensorMap(keys, [block])
        if "energy_uncertainty" in outputs:
            n_atoms = torch.tensor([len(s) for s in systems], device=device)
            if selected_atoms is None:
                rows = torch.nonzero(_full_mask(systems, device))
            else:
                rows = selected_atoms.values.to(torch.long).to(device)
            per_atom = (a_energy / n_atoms.to(torch.float64))[rows[:, 0]]
            block = TensorBlock(
                per_atom.to(dtype)[:, None],
                Labels(["system", "atom"], rows.to(torch.int32)),
                [],
                Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32, device=device)),
            )
            result["energy_uncertainty"] = TensorMap(keys, [block])
        if "symmd::force_equivariance_error" in outputs and self.nc_force != "":
            n_max = max([len(s) for s in systems])
            held = self.held_force_a2.to(device)
            if held.shape[0] != n_sys or held.shape[1] != n_max:
                held = torch.full([n_sys, n_max], float("nan"), dtype=torch.float64, device=device)
            mask = _full_mask(systems, device)
            block = TensorBlock(
                held[mask].clamp_min(0.0).sqrt().to(dtype)[:, None],
                Labels(["system", "atom"], torch.nonzero(mask).to(torch.int32)),
                [],
                Labels(["force"], torch.zeros(1, 1, dtype=torch.int32, device=device)),
            )
            result["symmd::force_equivariance_error"] = TensorMap(keys, [block])
