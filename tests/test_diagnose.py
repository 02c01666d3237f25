import json

import numpy as np
import pytest
import torch
from conftest import cu_cluster, cual_cell
from toy_models import toy_metatomic_model

from symmd import diagnose, models, o3


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


def test_diagnose_gives_exact_sector_weights_for_an_analytic_model():
    atoms = cu_cluster(5)
    d = diagnose(Dipole(), atoms, max_lambda=3, quadrature=6)
    energy = d.properties["energy"]["spectrum"]
    assert energy[(1, 1)][0] == pytest.approx(1.0, abs=1e-12)
    assert sum(v[0] for k, v in energy.items() if k != (1, 1)) < 1e-12
    # forces of E = c . d are constant lab-frame vectors: back-rotated they are
    # not constant, in the raw frame they are: all in (0, +1)
    forces = d.properties["forces"]["spectrum"]
    assert forces[(0, 1)][0] == pytest.approx(1.0, abs=1e-12)
    assert abs(d.properties["energy"]["rest"][0]) < 1e-10  # Parseval
    assert abs(d.properties["forces"]["rest"][0]) < 1e-10


def test_diagnose_toy_model_and_json(tmp_path):
    frames = [cual_cell((1, 1, 2), seed=s) for s in range(2)]
    d = diagnose(toy_metatomic_model(), frames, max_lambda=2)
    out = d.to_dict()
    json.dumps(out)
    assert out["quadrature"] == {"name": "I+inversion", "size": 120, "degree": 5}
    for name in ("energy", "forces", "stress"):
        entry = out["properties"][name]
        assert len(entry["error"]) == 2 and set(entry["spectrum"]) == {f"{l},{s}" for l in range(3) for s in (1, -1)}
    energy = d.properties["energy"]["spectrum"]
    # isotropic + v_x v_y / r^2: only lambda 0 and 2, polar
    assert energy[(0, 1)].min() > 0.9 and energy[(2, 1)].min() > 0
    assert max(energy[(1, 1)].max(), energy[(0, -1)].max()) < 1e-12
    # the energy is band-limited to lambda <= 2 (Parseval holds); the raw-frame
    # forces reach lambda = 3, reported as the rest above max_lambda
    assert abs(np.array(out["properties"]["energy"]["rest"])).max() < 1e-10
    assert min(out["properties"]["forces"]["rest"]) > 1e-4
    d.plot(tmp_path / "spectrum.png")
    assert (tmp_path / "spectrum.png").stat().st_size > 1000
    assert "energy" in d.table()


def test_shipped_pet_spectrum_is_dominated_by_the_equivariant_sectors():
    d = diagnose(models.shipped_model("pet-emt-cual"), cual_cell(seed=4), max_lambda=2)
    assert d.properties["energy"]["spectrum"][(0, 1)][0] > 0.9
    forces = d.properties["forces"]["spectrum"]
    assert forces[(1, 1)][0] == max(v[0] for v in forces.values())


def test_layer_spectra_through_hooks():
    d = diagnose(Dipole(), cu_cluster(4), max_lambda=2, quadrature=4, layers=["embed"])
    layer = d.properties["layer:embed"]["spectrum"]
    # centred positions rotate as vectors: all in (1, +1)
    assert layer[(1, 1)][0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"^the model has no layer 'nope'; its layers are \['embed'\]$"):
        diagnose(Dipole(), cu_cluster(4), max_lambda=1, layers=["nope"])
