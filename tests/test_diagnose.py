import json
import re

import ase
import ase.io
import numpy as np
import pytest
import torch
from helpers import cu_cluster, cual_cell
from toy_models import toy_metatomic_model, toy_model_with_extras

from symmd import diagnose, models, o3
from symmd.models import as_structures, neighbor_pairs


class Dipole(torch.nn.Module):
    """E = c . sum_i r_i: a pure lambda = 1 energy with a lab-frame c."""

    atomic_types = [29]

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor([0.3, -0.2, 0.5]))
        self.embed = torch.nn.Identity()

    def forward(self, positions, types, cell, pbc, system_index):
        r = self.embed(positions)
        dip = torch.zeros(cell.shape[0], 3, dtype=positions.dtype).index_add(0, system_index, r)
        return {"energy": dip @ self.c.to(positions.dtype)}


class PairFeatures(torch.nn.Module):
    """Invariant pair energy; exposes per-edge vectors and per-atom features
    through identity submodules, and declares a per-structure extra output
    ``moment`` (sum_i r_i, an equivariant vector)."""

    atomic_types = [13, 29]
    extra_outputs = {"moment": "vector", "counts": "scalar"}

    def __init__(self):
        super().__init__()
        self.edges = torch.nn.Identity()
        self.atoms = torch.nn.Identity()

    def forward(self, positions, types, cell, pbc, system_index):
        n = positions.shape[0]
        i, j = torch.triu_indices(n, n, 1)
        same = system_index[i] == system_index[j]
        i, j = i[same], j[same]
        v = self.edges(positions[j] - positions[i])  # [P, 3], copy-major
        r = v.norm(dim=-1)
        per_atom = (
            torch.zeros(n, dtype=positions.dtype)
            .index_add(0, i, torch.exp(-r))
            .index_add(0, j, torch.exp(-r))
        )
        per_atom = self.atoms(torch.stack([per_atom, per_atom**2], 1))
        energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index, per_atom[:, 0]
        )
        moment = torch.zeros(cell.shape[0], 3, dtype=positions.dtype).index_add(
            0, system_index, positions
        )
        return {"energy": energy, "moment": moment, "counts": per_atom[:, :1]}


def test_analytic_model_gives_exact_sector_weights_and_parseval():
    atoms = cu_cluster(5)
    d = diagnose(Dipole(), atoms, max_lambda=3, quadrature=6)
    energy = d.properties["energy"]["spectrum"]
    assert energy[(1, 1)][0] == pytest.approx(1.0, abs=1e-12)
    assert sum(v[0] for k, v in energy.items() if k != (1, 1)) < 1e-12
    # forces of E = c . d are the constant lab-frame vector -c: all in (0, +1),
    # and their spread over orientations is |c| for every atom
    forces = d.properties["forces"]
    assert forces["spectrum"][(0, 1)][0] == pytest.approx(1.0, abs=1e-12)
    c = torch.tensor([0.3, -0.2, 0.5]).double()  # the float32 parameter, as the model runs it
    assert forces["error"][0] == pytest.approx(float(c.norm()), abs=1e-12)
    for name in ("energy", "forces"):
        assert abs(d.properties[name]["above"][0]) < 1e-10  # Parseval


def test_extra_outputs_of_a_metatomic_model_have_their_analytic_spectra():
    atoms = cu_cluster(6, seed=3)
    c = torch.tensor([0.02, -0.01, 0.03], dtype=torch.float64)
    d = diagnose(toy_model_with_extras(c=c.tolist()), atoms, max_lambda=3, quadrature=6)
    assert list(d.properties) == [
        "energy",
        "forces",
        "non_conservative_force",
        "feature",
        "mtt::dipole",
    ]
    assert [d.properties[n]["kind"] for n in d.properties] == [
        "scalar",
        "vector",
        "vector",
        "scalar",
        "vector",
    ]

    # non-conservative forces: radial pair forces (1, +1) plus the constant c (0, +1)
    pairs = neighbor_pairs(as_structures(atoms), 4.0, False)
    pos = torch.from_numpy(atoms.positions)
    v = pos[pairs.second] - pos[pairs.first]
    r = v.norm(dim=-1, keepdim=True)
    f = torch.zeros(len(atoms), 3, dtype=torch.float64)
    f = f.index_add(0, pairs.first, -torch.exp(-r) * v / r).index_add(
        0, pairs.second, torch.exp(-r) * v / r
    )
    b0, b1 = len(atoms) * c.dot(c), (f * f).sum()
    nc = d.properties["non_conservative_force"]
    assert nc["spectrum"][(0, 1)][0] == pytest.approx(float(b0 / (b0 + b1)), rel=1e-10)
    assert nc["spectrum"][(1, 1)][0] == pytest.approx(float(b1 / (b0 + b1)), rel=1e-10)
    assert nc["error"][0] == pytest.approx(
        float(c.norm()), rel=1e-10
    )  # the constant is all of the breaking

    # feature 1 = sum_j fc n_x^2: lambda 0 weight (sum fc / 3)^2, lambda 2 weight
    # (4/45) sum_jk fc_j fc_k P2(n_j . n_k) per atom (addition theorem)
    fc = 0.5 * (torch.cos(torch.pi * r[:, 0] / 4.0) + 1)
    n_hat = v / r
    ends = torch.cat([pairs.first, pairs.second])
    w = torch.cat([fc, fc])
    nn = torch.cat([n_hat, -n_hat])
    b0 = b2 = 0.0
    for atom in range(len(atoms)):
        mask = ends == atom
        wa, na = w[mask], nn[mask]
        cos = na @ na.T
        b0 += (wa.sum() / 3) ** 2 + wa.sum() ** 2  # channel 1 and channel 0 (invariant)
        b2 += 4 / 45 * (wa[:, None] * wa[None, :] * (1.5 * cos**2 - 0.5)).sum()
    feat = d.properties["feature"]
    assert feat["spectrum"][(2, 1)][0] == pytest.approx(float(b2 / (b0 + b2)), rel=1e-9)
    assert feat["spectrum"][(0, 1)][0] == pytest.approx(float(b0 / (b0 + b2)), rel=1e-9)

    dipole = d.properties["mtt::dipole"]
    assert dipole["spectrum"][(1, 1)][0] == pytest.approx(1.0, abs=1e-12)
    assert dipole["error"][0] < 1e-12
    for entry in d.properties.values():
        assert abs(entry["above"][0]) < 1e-10  # everything is band-limited to lambda <= 3


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_statistics_over_structures_and_json(tmp_path):
    frames = [cual_cell((1, 1, 2), seed=s) for s in range(3)]
    d = diagnose(toy_metatomic_model(), frames, max_lambda=2)
    out = d.to_dict()
    json.loads(json.dumps(out))
    assert out["quadrature"] == {"name": "so3design4x43+inversion", "size": 86, "degree": 4}
    for name in ("energy", "forces", "stress"):
        entry = out["properties"][name]
        assert len(entry["error"]) == 3
        assert set(entry["spectrum"]) == {f"{lam},{s}" for lam in range(3) for s in (1, -1)} | {
            "above"
        }
        assert entry["mean"]["error"] == pytest.approx(np.mean(entry["error"]), rel=1e-12)
        assert entry["std"]["2,1"] == pytest.approx(np.std(entry["spectrum"]["2,1"]), rel=1e-12)
        assert sum(v[1] for v in entry["spectrum"].values()) == pytest.approx(1.0, abs=1e-12)
    # the per-structure numbers are those of each structure diagnosed alone
    alone = diagnose(toy_metatomic_model(), frames[1], max_lambda=2)
    for name in ("energy", "forces", "stress"):
        assert d.properties[name]["error"][1] == pytest.approx(
            alone.properties[name]["error"][0], rel=1e-12
        )
        assert d.properties[name]["spectrum"][(2, 1)][1] == pytest.approx(
            alone.properties[name]["spectrum"][(2, 1)][0], rel=1e-12
        )
    energy = d.properties["energy"]["spectrum"]
    # isotropic + v_x v_y / r^2: only lambda 0 and 2, polar
    assert energy[(0, 1)].min() > 0.9 and energy[(2, 1)].min() > 0
    assert max(energy[(1, 1)].max(), energy[(0, -1)].max()) < 1e-12
    assert abs(np.array(out["properties"]["energy"]["spectrum"]["above"])).max() < 1e-10
    forces_above = np.array(out["properties"]["forces"]["spectrum"]["above"])
    assert forces_above.min() > 1e-4  # raw forces reach lambda = 3
    fig = d.plot(tmp_path / "spectrum.png")
    # the plotted data: one panel per output, mean lines at the sector values, the
    # weight above max_lambda as its own marker
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    ax = panels["forces"]
    polar = [line for line in ax.get_lines() if line.get_label() == "polar (σ=+1)"][0]
    assert np.allclose(
        polar.get_ydata(), [d.properties["forces"]["spectrum"][(lam, 1)].mean() for lam in range(3)]
    )
    above = [line for line in ax.get_lines() if line.get_label() == "λ > 2"][0]
    assert above.get_xdata()[0] == 3 and above.get_ydata()[0] == pytest.approx(forces_above.mean())
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "λ"
    table = d.table()
    assert "energy" in table and "predicted twirl residual" in table


@pytest.mark.slow
def test_predicted_residuals_match_the_rules_on_a_band_limited_model():
    atoms = cual_cell((1, 1, 2), seed=1)
    model = toy_metatomic_model()
    d = diagnose(model, atoms, max_lambda=4)
    assert list(d.properties["forces"]["residual"]) == [1, 2, 3]
    exact = models.evaluate_rotated(models.load(model), atoms, o3.quadrature(12), ("forces",))[
        "forces"
    ]
    from symmd import metrics

    twirl = metrics.average(exact, o3.quadrature(12), "vector")
    for degree in (1, 2, 3):
        q = o3.quadrature(degree)
        f = metrics.average(
            models.evaluate_rotated(models.load(model), atoms, q, ("forces",))["forces"],
            q,
            "vector",
        )
        actual = float(((f - twirl) ** 2).sum(-1).mean().sqrt())
        assert d.properties["forces"]["residual"][degree][0] == pytest.approx(
            actual, rel=1e-6, abs=1e-12
        )


@pytest.mark.slow
def test_shipped_pet_spectrum_is_dominated_by_the_equivariant_sectors():
    d = diagnose(models.shipped_model("pet-emt-cual"), cual_cell(seed=4), max_lambda=2)
    assert d.properties["energy"]["spectrum"][(0, 1)][0] > 0.9
    forces = d.properties["forces"]["spectrum"]
    assert forces[(1, 1)][0] == max(v[0] for v in forces.values())
    # metatrain's internal auxiliaries are left out by default, available by name
    assert "feature" in d.properties
    assert not [name for name in d.properties if name.startswith("mtt::aux::")]
    aux = "mtt::aux::energy_last_layer_features"
    d = diagnose(models.shipped_model(), cual_cell(seed=4), max_lambda=1, properties=[aux])
    assert set(d.properties) == {aux}


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_table_has_units_and_a_legend():
    d = diagnose(models.shipped_model(), cual_cell(seed=4), max_lambda=1)
    lines = d.table().splitlines()
    assert lines[1].split()[:8] == ["property", "A", "(mean)", "unit", "0+", "0-", "1+", "1-"]
    end = next(i for i, line in enumerate(lines) if line.startswith("columns 'l+'/'l-'"))
    units = {line.split()[0]: line.split()[2] for line in lines[2:end]}
    assert units["energy"] == "eV" and units["forces"] == "eV/A" and units["stress"] == "eV/A^3"
    assert "feature" in units and not [n for n in units if n.startswith("mtt::aux::")]


def test_layer_spectra_of_per_atom_and_per_edge_features():
    frames = [cu_cluster(4), cu_cluster(5, seed=2)]
    d = diagnose(PairFeatures(), frames, max_lambda=2, quadrature=4, layers=["edges", "atoms"])
    edges, atoms = d.properties["layer:edges"], d.properties["layer:atoms"]
    # edge vectors rotate as vectors, per-atom pair sums are invariant
    assert np.allclose(edges["spectrum"][(1, 1)], 1.0, atol=1e-12)
    assert np.allclose(atoms["spectrum"][(0, 1)], 1.0, atol=1e-12)
    assert np.allclose(atoms["error"], 0.0, atol=1e-12)
    assert len(edges["error"]) == 2  # one per structure
    # declared extra outputs of a callable: an equivariant moment and an invariant count
    assert np.allclose(d.properties["moment"]["spectrum"][(1, 1)], 1.0, atol=1e-12)
    assert np.allclose(d.properties["moment"]["error"], 0.0, atol=1e-12)
    assert np.allclose(d.properties["counts"]["spectrum"][(0, 1)], 1.0, atol=1e-12)


def test_layers_of_the_dipole_module_and_errors():
    d = diagnose(Dipole(), cu_cluster(4), max_lambda=2, quadrature=4, layers=["embed"])
    assert d.properties["layer:embed"]["spectrum"][(1, 1)][0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(
        ValueError, match=r"^the model has no layer 'nope'; its layers are \['embed'\]$"
    ):
        diagnose(Dipole(), cu_cluster(4), max_lambda=1, layers=["nope"])
    with pytest.raises(
        TypeError, match=r"^layers must be a list of module names, got the string 'embed'$"
    ):
        diagnose(Dipole(), cu_cluster(4), max_lambda=1, layers="embed")
    with pytest.raises(
        TypeError,
        match=re.escape("layer spectra need an eager model, and this metatomic model is exported"),
    ):
        diagnose(models.shipped_model(), cual_cell((1, 1, 1)), max_lambda=1, layers=["backend"])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the model has no output ['dipole']; choose among ['energy', 'energies', 'forces', 'stress']"
        ),
    ):
        diagnose(Dipole(), cu_cluster(4), max_lambda=1, properties=["dipole"])
    with pytest.raises(ValueError, match=r"^max_lambda must be a non-negative int, got -1$"):
        diagnose(Dipole(), cu_cluster(4), max_lambda=-1)
    with pytest.raises(
        ValueError,
        match=r"^the quadrature 'O\+inversion' has degree 3, which cannot resolve the spectrum up to max_lambda=2",
    ):
        diagnose(Dipole(), cu_cluster(4), max_lambda=2, quadrature=3)


@pytest.mark.slow  # loads a metatrain checkpoint: seconds
def test_metatrain_checkpoint_layers_drop_the_padded_neighbour_slots(pet_checkpoint):
    """PET's first edge embedding is W [r, |r|] + b: over O(3) it puts
    ||W_r||^2 sum_e |r_e|^2 / 3 in (1, +1) and sum_e ||w |r_e| + b||^2 in
    (0, +1), summed over the real edges only (padding would add ||b||^2)."""
    atoms = cu_cluster(9, seed=1)
    d = diagnose(
        pet_checkpoint,
        atoms,
        max_lambda=2,
        quadrature=4,
        layers=["backend.gnn_layers.0.edge_embedder", "backend.gnn_layers.0"],
    )
    adapter = models.load(pet_checkpoint)
    linear = adapter.hook_root().backend.gnn_layers[0].edge_embedder
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    cutoff = adapter.neighbor_requests()[0][0]
    pairs = neighbor_pairs(as_structures(atoms), cutoff, True)
    pos = torch.from_numpy(atoms.positions)
    r = (pos[pairs.second] - pos[pairs.first]).norm(dim=-1)
    b1 = (weight[:, :3] ** 2).sum() * (r**2).sum() / 3
    b0 = ((weight[:, 3][None, :] * r[:, None] + bias[None, :]) ** 2).sum()
    spectrum = d.properties["layer:backend.gnn_layers.0.edge_embedder"]["spectrum"]
    assert spectrum[(1, 1)][0] == pytest.approx(float(b1 / (b0 + b1)), rel=1e-5)
    assert spectrum[(0, 1)][0] == pytest.approx(float(b0 / (b0 + b1)), rel=1e-5)
    # node and edge outputs of the first message-passing layer are both there
    assert {"layer:backend.gnn_layers.0[0]", "layer:backend.gnn_layers.0[1]"} <= set(d.properties)


class LabTensor(torch.nn.Module):
    """E = 0 and a constant lab-frame rank-2 output C (not symmetric)."""

    extra_outputs = {"tensor": "rank2"}

    def __init__(self):
        super().__init__()
        self.c = torch.nn.Parameter(
            torch.tensor(
                [[1.0, 0.4, -0.3], [0.1, 2.0, 0.5], [0.2, -0.6, -0.5]], dtype=torch.float64
            )
        )

    def forward(self, positions, types, cell, pbc, system_index):
        n = cell.shape[0]
        energy = (positions.sum() * 0).expand(n)
        return {"energy": energy, "tensor": self.c.expand(n, 3, 3)}


def test_rank2_parts_have_exact_errors_and_spectra():
    atoms = cu_cluster(4)
    d = diagnose(LabTensor(), atoms, max_lambda=2, properties=["tensor"])
    c = LabTensor().c.detach()
    iso = torch.trace(c) / 3 * torch.eye(3, dtype=torch.float64)
    anti = (c - c.T) / 2
    two = c - iso - anti
    expected = {
        "tensor[lambda=0]": 0.0,
        "tensor[lambda=1]": anti.norm(),
        "tensor[lambda=2]": two.norm(),
    }
    for name, a in expected.items():
        entry = d.properties[name]
        assert entry["error"][0] == pytest.approx(float(a), abs=1e-12)
        # a constant lab-frame output is invariant as a raw response: all in (0, +1)
        assert entry["spectrum"][(0, 1)][0] == pytest.approx(1.0, abs=1e-12)
    total = d.properties["tensor"]["error"][0]
    assert total**2 == pytest.approx(float(anti.norm() ** 2 + two.norm() ** 2), rel=1e-12)
    # every spectrum, with the weight above max_lambda, sums to one
    for entry in d.properties.values():
        assert sum(v[0] for v in entry["spectrum"].values()) + entry["above"][0] == pytest.approx(
            1.0, abs=1e-12
        )


def test_symmetric_rank2_output_has_no_lambda1_part():
    d = diagnose(toy_metatomic_model(), cual_cell(), max_lambda=2, properties=["stress"])
    assert "stress[lambda=0]" in d.properties and "stress[lambda=2]" in d.properties
    a2 = sum(
        d.properties[f"stress[lambda={lam}]"]["error"][0] ** 2
        for lam in (0, 1, 2)
        if f"stress[lambda={lam}]" in d.properties
    )
    assert a2 == pytest.approx(d.properties["stress"]["error"][0] ** 2, rel=1e-10)


@pytest.mark.slow
def test_labelled_structures_get_model_error_beside_a(tmp_path):
    from ase.calculators.emt import EMT

    frames = []
    for seed in range(2):
        atoms = cual_cell(seed=seed, rattle=0.05)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    path = tmp_path / "labelled.xyz"
    ase.io.write(path, frames)
    read = ase.io.read(path, ":")
    model = models.shipped_model()
    d = diagnose(model, read, max_lambda=1)
    out = models.evaluate_rotated(models.load(model), read, torch.eye(3), ("energy", "forces"))
    ref_f = np.concatenate([f.get_forces() for f in frames])
    abs_f = np.linalg.norm(out["forces"][0].numpy() - ref_f, axis=1)
    forces = d.properties["forces"]
    assert np.allclose(forces["abs_error"], abs_f, atol=2e-6)  # float32 model
    assert len(forces["error_rows"]) == len(abs_f) == 64
    acc = forces["accuracy"]
    assert acc["median_abs_error"] == pytest.approx(np.median(abs_f), abs=2e-6)
    assert acc["ratio"] == pytest.approx(acc["median_abs_error"] / np.median(forces["error_rows"]))
    energy = d.properties["energy"]
    ref_e = np.array([f.get_potential_energy() for f in frames])
    assert np.allclose(energy["abs_error"], np.abs(out["energy"][0].numpy() - ref_e), atol=1e-4)
    assert (
        "stress" in d.to_dict()["properties"] and "accuracy" in d.to_dict()["properties"]["stress"]
    )
    assert "model error against the labels" in d.table()
    fig = d.plot_errors(tmp_path / "errors.png")
    ax = [a for a in fig.axes if a.get_title() == "forces"][0]
    medians = sorted(line.get_xdata()[0] for line in ax.get_lines())
    assert np.allclose(
        medians, sorted([np.median(abs_f), np.median(forces["error_rows"])]), rtol=1e-6
    )
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "error (eV/A)"
    unlabelled = diagnose(model, cual_cell(), max_lambda=1)
    with pytest.raises(ValueError, match="no output has reference labels"):
        unlabelled.plot_errors(tmp_path / "none.png")
