"""Small analytic models for the tests: exact, fast, float64.

- ``lab_frame_callable``: a batched torch callable whose energy has a fixed
  lab-frame anisotropy (so it is not rotationally invariant), smooth and
  translation invariant.
- ``toy_metatomic_model``: the same kind of pair energy as an exported-style
  metatomic ``AtomisticModel`` that reads its neighbour list from the system.
- ``direct_toy``: a scriptable float64 metatomic model with direct
  (non-conservative) forces and stress that carry lab-frame offsets.
"""

import math
from typing import Dict, List, Optional

import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)


def pair_energy(v: torch.Tensor, cutoff: float, anisotropy: float) -> torch.Tensor:
    """Pair energy of vectors ``v [P, 3]``: a smooth repulsion plus a lab-frame
    term ``anisotropy * v_x v_y / r^2`` (lambda = 2 content), cut off smoothly."""
    r = v.norm(dim=-1)
    fc = 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0) * (r < cutoff)
    return fc * (torch.exp(-r) + anisotropy * v[:, 0] * v[:, 1] / (r * r))


def lab_frame_callable(positions, types, cell, pbc, system_index, anisotropy=0.05):
    """Batched callable, non-periodic: all pairs within each structure."""
    n = positions.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    same = system_index[i] == system_index[j]
    i, j = i[same], j[same]
    v = positions[j] - positions[i]
    weight = (types[i] + types[j]).to(positions.dtype) / 58.0
    e_pair = weight * pair_energy(v, 4.0, anisotropy) + 0.01 * v[:, 2] ** 3
    energy = torch.zeros(cell.shape[0], dtype=positions.dtype, device=positions.device)
    return {"energy": energy.index_add(0, system_index[i], e_pair)}


class _PairToy(torch.nn.Module):
    def __init__(self, cutoff: float, anisotropy: float, uniaxial: float = 0.0):
        super().__init__()
        self.cutoff = cutoff
        self.anisotropy = anisotropy
        self.uniaxial = uniaxial
        self._nl = NeighborListOptions(cutoff=cutoff, full_list=False, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        per_atom = outputs["energy"].sample_kind == "atom"
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            nl = system.get_neighbor_list(self._nl)
            v = nl.values[:, :, 0]
            r = torch.linalg.norm(v, dim=-1)
            fc = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
            e_pair = fc * (
                torch.exp(-r)
                + self.anisotropy * v[:, 0] * v[:, 1] / (r * r)
                + self.uniaxial * (v[:, 2] / r) ** 4
            )
            first = nl.samples.column("first_atom").to(torch.long)
            n = len(system)
            e_atom = torch.zeros(n, dtype=v.dtype, device=v.device).index_add(0, first, e_pair)
            e_atom = e_atom + 0.1 * system.types.to(v.dtype) / 29.0
            if per_atom:
                values.append(e_atom[:, None])
                idx = torch.arange(n, device=v.device, dtype=torch.int32)
                samples.append(torch.stack([torch.full_like(idx, s), idx], 1))
            else:
                values.append(e_atom.sum().reshape(1, 1))
                samples.append(torch.tensor([[s]], dtype=torch.int32, device=v.device))
        names = ["system", "atom"] if per_atom else ["system"]
        block = TensorBlock(
            values=torch.cat(values),
            samples=Labels(names, torch.cat(samples)),
            components=[],
            properties=Labels(["energy"], torch.tensor([[0]], device=values[0].device)),
        )
        keys = Labels(["_"], torch.tensor([[0]], device=values[0].device))
        return {"energy": TensorMap(keys, [block])}


def toy_metatomic_model(
    cutoff: float = 4.0, anisotropy: float = 0.05, uniaxial: float = 0.0
) -> AtomisticModel:
    """A float64 metatomic model with a lab-frame anisotropic pair energy, Cu/Al:
    ``fc(r) (exp(-r) + anisotropy v_x v_y / r^2 + uniaxial (v_z / r)^4)``."""
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=[13, 29],
        interaction_range=cutoff,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    return AtomisticModel(
        _PairToy(cutoff, anisotropy, uniaxial).eval(), ModelMetadata(), capabilities
    )


class _ExtrasToy(_PairToy):
    """The pair toy plus three extra outputs with analytic spectra:

    - ``non_conservative_forces`` (per atom, xyz): radial pair forces
      ``sum_j exp(-r) n_ij`` plus a lab-frame constant ``c``: the raw response
      is (1, +1) for the radial part and (0, +1) for ``c``;
    - ``features`` (per atom, 2 invariant-looking channels):
      ``[sum_j fc_ij, sum_j fc_ij n_x^2]``; the second has lambda = 0 and 2;
    - ``mtt::dipole`` (per structure, xyz): ``sum_i q_i r_i`` with q = +0.1 (Cu),
      -0.2 (Al): exactly equivariant.
    """

    def __init__(self, cutoff: float, anisotropy: float, c: List[float]):
        super().__init__(cutoff, anisotropy)
        self.register_buffer("c", torch.tensor(c, dtype=torch.float64))

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        result = super().forward(
            systems,
            {"energy": outputs["energy"]}
            if "energy" in outputs
            else {"energy": ModelOutput(sample_kind="system")},
            selected_atoms,
        )
        forces: List[torch.Tensor] = []
        feats: List[torch.Tensor] = []
        dipoles: List[torch.Tensor] = []
        atom_samples: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            nl = system.get_neighbor_list(self._nl)
            v = nl.values[:, :, 0]
            r = torch.linalg.norm(v, dim=-1)
            n_hat = v / r[:, None]
            fc = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
            first = nl.samples.column("first_atom").to(torch.long)
            second = nl.samples.column("second_atom").to(torch.long)
            n = len(system)
            f = torch.zeros(n, 3, dtype=v.dtype).index_add(
                0, first, -torch.exp(-r)[:, None] * n_hat
            )
            f = f.index_add(0, second, torch.exp(-r)[:, None] * n_hat) + self.c.to(v.dtype)
            forces.append(f)
            both = torch.cat([fc, fc])
            ends = torch.cat([first, second])
            nx2 = torch.cat([n_hat[:, 0] ** 2, n_hat[:, 0] ** 2])
            feat = torch.zeros(n, 2, dtype=v.dtype).index_add(
                0, ends, torch.stack([both, both * nx2], 1)
            )
            feats.append(feat)
            q = torch.where(system.types == 29, 0.1, -0.2).to(v.dtype)
            dipoles.append((q[:, None] * system.positions).sum(0, keepdim=True))
            idx = torch.arange(n, dtype=torch.int32)
            atom_samples.append(torch.stack([torch.full_like(idx, s), idx], 1))
        samples = Labels(["system", "atom"], torch.cat(atom_samples))
        keys = Labels(["_"], torch.tensor([[0]]))
        xyz = Labels(["xyz"], torch.arange(3, dtype=torch.int32)[:, None])
        if "non_conservative_forces" in outputs:
            block = TensorBlock(
                torch.cat(forces)[:, :, None], samples, [xyz], Labels(["f"], torch.tensor([[0]]))
            )
            result["non_conservative_forces"] = TensorMap(keys, [block])
        if "features" in outputs:
            block = TensorBlock(
                torch.cat(feats), samples, [], Labels(["feature"], torch.tensor([[0], [1]]))
            )
            result["features"] = TensorMap(keys, [block])
        if "mtt::dipole" in outputs:
            system_samples = Labels(
                ["system"], torch.arange(len(systems), dtype=torch.int32)[:, None]
            )
            block = TensorBlock(
                torch.cat(dipoles)[:, :, None],
                system_samples,
                [xyz],
                Labels(["dipole"], torch.tensor([[0]])),
            )
            result["mtt::dipole"] = TensorMap(keys, [block])
        if "energy" not in outputs:
            del result["energy"]
        return result


def toy_model_with_extras(
    cutoff: float = 4.0, anisotropy: float = 0.05, c=(0.02, -0.01, 0.03)
) -> AtomisticModel:
    """:class:`_ExtrasToy` as a float64 metatomic model (Cu/Al)."""
    capabilities = ModelCapabilities(
        outputs={
            "energy": ModelOutput(unit="eV", sample_kind="atom"),
            "non_conservative_forces": ModelOutput(
                quantity="force", unit="eV/Angstrom", sample_kind="atom"
            ),
            "features": ModelOutput(sample_kind="atom"),
            "mtt::dipole": ModelOutput(sample_kind="system"),
        },
        atomic_types=[13, 29],
        interaction_range=cutoff,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    return AtomisticModel(
        _ExtrasToy(cutoff, anisotropy, list(c)).eval(), ModelMetadata(), capabilities
    )


def add_direct_outputs(
    result: Dict[str, TensorMap],
    outputs: Dict[str, ModelOutput],
    forces: List[torch.Tensor],
    atom_samples: Labels,
    stresses: List[torch.Tensor],
    systems: torch.Tensor,
):
    """Put the requested direct outputs of the toys into ``result``: per-atom
    forces ``[N, 3]`` (``forces`` per system) and per-system stresses ``[3, 3]``."""
    keys = Labels(["_"], torch.tensor([[0]]))
    xyz = Labels(["xyz"], torch.arange(3, dtype=torch.int32)[:, None])
    if "non_conservative_force" in outputs:
        block = TensorBlock(
            torch.cat(forces)[:, :, None],
            atom_samples,
            [xyz],
            Labels(["non_conservative_force"], torch.tensor([[0]])),
        )
        result["non_conservative_force"] = TensorMap(keys, [block])
    if "non_conservative_stress" in outputs:
        block = TensorBlock(
            torch.stack(stresses)[:, :, :, None],
            Labels(["system"], systems),
            [Labels(["xyz_1"], xyz.values), Labels(["xyz_2"], xyz.values)],
            Labels(["non_conservative_stress"], torch.tensor([[0]])),
        )
        result["non_conservative_stress"] = TensorMap(keys, [block])


class DirectToy(torch.nn.Module):
    """Float64, TorchScript: the pair toy energy plus direct forces and stress
    with lab-frame parts (a constant force ``c`` and a constant, non-symmetric
    stress ``s``) on top of exactly equivariant pair terms."""

    def __init__(self, cutoff: float = 4.0):
        super().__init__()
        self.cutoff = cutoff
        self._nl = NeighborListOptions(cutoff=cutoff, full_list=False, strict=True)
        self.register_buffer("c", torch.tensor([0.02, -0.01, 0.03], dtype=torch.float64))
        self.register_buffer(
            "s", torch.tensor([[0.0, 0.01, 0.0], [0.0, 0.0, -0.02], [0.005, 0.0, 0.0]]).double()
        )

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        atoms: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            nl = system.get_neighbor_list(self._nl)
            v = nl.values[:, :, 0]
            r = torch.linalg.norm(v, dim=-1)
            fc = 0.5 * (torch.cos(math.pi * r / self.cutoff) + 1.0)
            energies.append((fc * (torch.exp(-r) + 0.05 * v[:, 0] * v[:, 1] / (r * r))).sum())
            first = nl.samples.column("first_atom").to(torch.long)
            second = nl.samples.column("second_atom").to(torch.long)
            pair = torch.exp(-r)[:, None] * v / r[:, None]
            f = torch.zeros(len(system), 3, dtype=v.dtype).index_add(0, first, -pair)
            forces.append(f.index_add(0, second, pair) + self.c)
            stresses.append(torch.einsum("pi,pj->ij", v, pair) / 100.0 + self.s)
            idx = torch.arange(len(system), dtype=torch.int32)
            atoms.append(torch.stack([torch.full_like(idx, s), idx], 1))
        keys = Labels(["_"], torch.tensor([[0]]))
        n = torch.arange(len(systems), dtype=torch.int32)[:, None]
        result: Dict[str, TensorMap] = {}
        result["energy"] = TensorMap(
            keys,
            [
                TensorBlock(
                    torch.stack(energies)[:, None],
                    Labels(["system"], n),
                    [],
                    Labels(["energy"], torch.tensor([[0]])),
                )
            ],
        )
        add_direct_outputs(
            result, outputs, forces, Labels(["system", "atom"], torch.cat(atoms)), stresses, n
        )
        return result


def direct_toy() -> AtomisticModel:
    outputs = {
        "energy": ModelOutput(unit="eV", sample_kind="system"),
        "non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom"),
        "non_conservative_stress": ModelOutput(unit="eV/Angstrom^3", sample_kind="system"),
    }
    caps = ModelCapabilities(
        outputs=outputs,
        atomic_types=[13, 29],
        interaction_range=4.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    return AtomisticModel(DirectToy().eval(), ModelMetadata(), caps)


def morse_terms(
    v: torch.Tensor,
    omega: torch.Tensor,
    anisotropy: float,
    cutoff: float = 5.0,
    depth: float = 0.3,
    a: float = 1.3,
    r0: float = 2.6,
):
    """Per pair ``v = r_j - r_i`` ``[P, 3]``: the pair energy ``[P]``, the exact
    Morse force on atom ``i`` ``[P, 3]`` (minus it on ``j``) and the lab-frame
    spin term on atom ``i`` (minus it on ``j``) of :class:`MorseDirect`."""
    r = torch.linalg.norm(v, dim=-1)
    arg = math.pi * r / cutoff
    fc = 0.5 * (torch.cos(arg) + 1.0) * (r < cutoff).to(v.dtype)
    dfc = -0.5 * math.pi / cutoff * torch.sin(arg) * (r < cutoff).to(v.dtype)
    e = torch.exp(-a * (r - r0))
    morse = depth * ((1.0 - e) ** 2 - 1.0)
    dmorse = 2.0 * depth * a * (1.0 - e) * e
    pair = fc * (morse + anisotropy * v[:, 0] * v[:, 1] / (r * r))
    along = ((dfc * morse + fc * dmorse) / r)[:, None] * v
    spin = fc[:, None] * torch.linalg.cross(omega.to(v.dtype).expand_as(v), v)
    return pair, along, spin


def morse_direct_callable(
    c=(0.02, -0.01, 0.015), omega=(0.0, 0.0, 0.01), anisotropy=0.0, conservative=False
):
    """:class:`MorseDirect`'s energy and direct forces as a batched torch
    callable over all pairs of each structure (non-periodic only), for
    ``SymmetryCalculator(..., non_conservative=True)``; the energy is detached
    (nothing can differentiate it). ``conservative=True``: the energy alone,
    differentiable (forces by autograd)."""
    c_t = torch.tensor(c, dtype=torch.float64)
    omega_t = torch.tensor(omega, dtype=torch.float64)

    def model(positions, types, cell, pbc, system_index):
        n = positions.shape[0]
        i, j = torch.triu_indices(n, n, 1)
        same = system_index[i] == system_index[j]
        i, j = i[same], j[same]
        pair, along, spin = morse_terms(positions[j] - positions[i], omega_t, anisotropy)
        forces = torch.zeros_like(positions).index_add(0, i, along + spin)
        forces = forces.index_add(0, j, -along - spin) + c_t.to(positions.dtype)
        energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index[i], pair
        )
        if conservative:
            return {"energy": energy}
        return {"energy": energy.detach(), "forces": forces.detach()}

    return model


class MorseDirect(torch.nn.Module):
    """Float64, TorchScript, cohesive (clusters hold together): a smoothly cut
    Morse pair energy :math:`E = \\sum_{pairs} f_c(r) D [(1 - e^{-a (r - r_0)})^2 - 1]`
    (plus ``anisotropy * f_c v_x v_y / r^2``, a lab-frame term that makes the
    energy not exactly rotation invariant), and direct outputs:

    - ``non_conservative_force``: the exact :math:`-\\nabla E` of the invariant
      Morse part (analytic, no autograd) plus two lab-frame errors: a constant
      ``c`` on every atom (net force :math:`N c`) and the pair term
      :math:`f_c(r_{ij})\\, \\omega \\times v_{ij}` on atom ``i`` (antisymmetric
      in the pair: no net force, but the net torque
      :math:`-\\sum f_c\\, v \\times (\\omega \\times v)`, which spins clusters up);
    - ``non_conservative_stress``: the exact virial stress of the Morse part
      plus a constant, non-symmetric lab-frame ``s``.

    Twirled over O(3), both errors vanish (they are linear in the rotation), so
    the average of the direct forces is exactly the invariant Morse force.
    """

    def __init__(
        self,
        c: List[float],
        omega: List[float],
        s: List[float],
        anisotropy: float = 0.0,
        cutoff: float = 5.0,
        depth: float = 0.3,
        a: float = 1.3,
        r0: float = 2.6,
    ):
        super().__init__()
        self.cutoff = cutoff
        self.depth = depth
        self.a = a
        self.r0 = r0
        self.anisotropy = anisotropy
        self._nl = NeighborListOptions(cutoff=cutoff, full_list=False, strict=True)
        self.register_buffer("c", torch.tensor(c, dtype=torch.float64))
        self.register_buffer("omega", torch.tensor(omega, dtype=torch.float64))
        self.register_buffer("s", torch.tensor(s, dtype=torch.float64).reshape(3, 3))

    @torch.jit.export  # kept in the saved file: symmd.export reads it
    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self._nl]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        per_atom = "energy" in outputs and outputs["energy"].sample_kind == "atom"
        energies: List[torch.Tensor] = []
        forces: List[torch.Tensor] = []
        stresses: List[torch.Tensor] = []
        atoms: List[torch.Tensor] = []
        for s, system in enumerate(systems):
            nl = system.get_neighbor_list(self._nl)
            v = nl.values[:, :, 0]
            pair, along, spin = morse_terms(
                v, self.omega, self.anisotropy, self.cutoff, self.depth, self.a, self.r0
            )
            first = nl.samples.column("first_atom").to(torch.long)
            second = nl.samples.column("second_atom").to(torch.long)
            n = len(system)
            half = 0.5 * pair
            e_atom = torch.zeros(n, dtype=v.dtype).index_add(0, first, half)
            energies.append(e_atom.index_add(0, second, half))
            f = torch.zeros(n, 3, dtype=v.dtype).index_add(0, first, along + spin)
            forces.append(f.index_add(0, second, -along - spin) + self.c)
            volume = torch.abs(torch.linalg.det(system.cell))
            if bool(system.pbc.all()):
                stresses.append(torch.einsum("pi,pj->ij", v, along) / volume + self.s)
            else:
                stresses.append(torch.zeros(3, 3, dtype=v.dtype))
            idx = torch.arange(n, dtype=torch.int32)
            atoms.append(torch.stack([torch.full_like(idx, s), idx], 1))
        keys = Labels(["_"], torch.tensor([[0]]))
        n_sys = torch.arange(len(systems), dtype=torch.int32)[:, None]
        atom_samples = Labels(["system", "atom"], torch.cat(atoms))
        result: Dict[str, TensorMap] = {}
        if per_atom:
            energy_block = TensorBlock(
                torch.cat(energies)[:, None],
                atom_samples,
                [],
                Labels(["energy"], torch.tensor([[0]])),
            )
        else:
            totals: List[torch.Tensor] = []
            for e_atom in energies:
                totals.append(e_atom.sum())
            energy_block = TensorBlock(
                torch.stack(totals)[:, None],
                Labels(["system"], n_sys),
                [],
                Labels(["energy"], torch.tensor([[0]])),
            )
        result["energy"] = TensorMap(keys, [energy_block])
        add_direct_outputs(result, outputs, forces, atom_samples, stresses, n_sys)
        return result


def morse_direct(
    c=(0.02, -0.01, 0.015),
    omega=(0.0, 0.0, 0.01),
    s=(0.0, 1e-3, 0.0, 0.0, 0.0, -2e-3, 5e-4, 0.0, 0.0),
    anisotropy: float = 0.0,
    stress: bool = True,
) -> AtomisticModel:
    """:class:`MorseDirect` as a float64 metatomic model (Cu/Al); ``c`` and
    ``omega`` zero give exact conservative direct forces; ``stress=False``
    leaves out the direct stress output."""
    outputs = {
        "energy": ModelOutput(unit="eV", sample_kind="atom"),
        "non_conservative_force": ModelOutput(unit="eV/Angstrom", sample_kind="atom"),
    }
    if stress:
        outputs["non_conservative_stress"] = ModelOutput(unit="eV/Angstrom^3", sample_kind="system")
    caps = ModelCapabilities(
        outputs=outputs,
        atomic_types=[13, 29],
        interaction_range=5.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    module = MorseDirect(list(c), list(omega), list(s), anisotropy).eval()
    return AtomisticModel(module, ModelMetadata(), caps)
