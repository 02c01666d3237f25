"""The shipped direct-force PET (``pet-emt-cual-direct``): what it declares,
that symmd runs it both ways on a cluster and a cell, and that the figures
``examples/train_model/README.md`` quotes are those of the committed JSON that
``evaluate_direct.py`` wrote (and of the committed model file)."""

import json
import os
import pathlib
import re

import ase
import numpy as np
import pytest
from ase.cluster import Icosahedron

from symmd import SymmetryCalculator, models

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDER = ROOT / "examples" / "train_model"
README = (FOLDER / "README.md").read_text()
METRICS = json.loads((FOLDER / "direct_metrics.json").read_text())
CURVES = json.loads((FOLDER / "direct_curves.json").read_text())
NAME = "pet-emt-cual-direct"


def quoted(pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` in the folder's README (which must quote it)."""
    match = re.search(pattern, README, flags=re.S)
    assert match, f"examples/train_model/README.md no longer quotes {pattern!r}"
    return match.groups()


@pytest.fixture(scope="module")
def path():
    return models.shipped_model(NAME)


def cluster() -> ase.Atoms:
    atoms = Icosahedron("Cu", 3, latticeconstant=3.7)  # 55 atoms, a third Al
    atoms.numbers[::3] = 13
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def test_shipped_and_listed(path, capsys):  # no model call
    from symmd.cli import main

    assert NAME in models.SHIPPED_MODELS
    assert os.path.getsize(path) < 2_000_000
    assert main(["models"]) == 0
    assert any(line.startswith(NAME + " ") for line in capsys.readouterr().out.splitlines())


@pytest.mark.slow  # loads and runs the TorchScript model: seconds
def test_declares_energy_and_direct_heads(path):
    model = models.load(path, non_conservative=True).model
    caps = model.capabilities()
    assert {"energy", "non_conservative_force", "non_conservative_stress"} <= set(caps.outputs)
    assert caps.dtype == "float32"
    assert sorted(caps.atomic_types) == [13, 29]


@pytest.mark.slow  # loads and runs the TorchScript model: seconds
def test_finite_both_ways_on_a_cluster_and_a_cell(path):
    cell = models.cual_cell((2, 2, 2), seed=3, rattle=0.05)
    for nc in (False, True):
        calc = SymmetryCalculator(path, non_conservative=nc)
        atoms = cluster()
        atoms.calc = calc
        forces = atoms.get_forces()  # no stress for a cluster
        assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
        assert np.isfinite(atoms.get_potential_energy())
        periodic = cell.copy()
        periodic.calc = calc
        assert np.isfinite(periodic.get_forces()).all()
        stress = periodic.get_stress()
        assert stress.shape == (6,) and np.isfinite(stress).all()
        # EMT-like magnitudes: a rattled cell is not far from zero stress
        assert np.abs(stress).max() < 0.05  # eV/A^3


@pytest.mark.slow  # loads and runs the TorchScript model: seconds
def test_direct_forces_follow_the_conservative_ones(path):
    """The direct head learned the forces: on a rattled cell it agrees with
    the autograd forces far better than zero would."""
    atoms = models.cual_cell((2, 2, 2), seed=5, rattle=0.08)
    forces = {}
    for nc in (False, True):
        atoms.calc = SymmetryCalculator(path, non_conservative=nc)
        forces[nc] = atoms.get_forces()
    gap = np.sqrt(np.mean((forces[True] - forces[False]) ** 2))
    assert gap < 0.5 * np.sqrt(np.mean(forces[False] ** 2))


def test_readme_figures_are_those_of_the_committed_metrics(path):
    acc = METRICS["accuracy"]
    assert METRICS["model"]["size_bytes"] == os.path.getsize(path)
    (size,) = quoted(r"pet-emt-cual-direct\.pt` \| [^|]+\| [^|]+\| ([\d ]+) B \|")
    assert int(size.replace(" ", "")) == os.path.getsize(path)
    number = r"([\d.]+)"
    rows = re.findall(
        rf"^\| (bulk|cluster|all) \| {number} \| {number} \| {number} \| {number} \| "
        rf"([\d.]+|n/a) \| ([\d.]+|n/a) \| {number} \|$",
        README,
        flags=re.M,
    )
    assert [r[0] for r in rows] == ["bulk", "cluster", "all"]
    for name, e_mae, f_cons, f_direct, ratio, s_cons, s_direct, net in rows:
        got = acc[name]
        assert float(e_mae) == pytest.approx(got["energy_mae_mev_per_atom"], abs=0.051)
        assert float(f_cons) == pytest.approx(got["force_rmse_conservative_mev_per_a"], abs=0.051)
        assert float(f_direct) == pytest.approx(got["force_rmse_direct_mev_per_a"], abs=0.051)
        ratio_got = got["force_rmse_ratio_direct_over_conservative"]
        assert float(ratio) == pytest.approx(ratio_got, abs=0.0051)
        if name == "cluster":
            assert s_cons == s_direct == "n/a"
        else:
            s_cons_got = got["stress_rmse_conservative_mev_per_a3"]
            assert float(s_cons) == pytest.approx(s_cons_got, abs=0.051)
            assert float(s_direct) == pytest.approx(got["stress_rmse_direct_mev_per_a3"], abs=0.051)
        assert float(net) == pytest.approx(got["direct_net_force_mean_ev_per_a"], abs=0.00051)
    # the goal of the issue: direct forces at most 1.5x the conservative ones
    assert acc["all"]["force_rmse_ratio_direct_over_conservative"] <= 1.5


@pytest.mark.parametrize(
    "title, metric",
    [("direct forces", "direct_forces_mev_per_a"), ("conservative forces", "forces_mev_per_a")],
)
def test_readme_learning_curves_are_those_of_the_committed_logs(title, metric):
    """Each learning-curve table of the README is direct_curves.json at the
    epochs it quotes (validation RMSE, meV/A, rounded)."""
    table = re.search(
        rf"^\| {title}, run \| steps/epoch ((?:\| \d+ )+)\|\n\|[-:|]+\n((?:\|.*\n)+)",
        README,
        flags=re.M,
    )
    assert table, f"examples/train_model/README.md has no {title} learning-curve table"
    epochs = [int(e) for e in re.findall(r"\d+", table.group(1))]
    rows = re.findall(r"^\| `(\w+)` \| \d+ \| (.*) \|$", table.group(2), flags=re.M)
    assert len(rows) >= 3
    for run, cells in rows:
        curve = dict(zip(CURVES[run]["epoch"], CURVES[run]["validation"][metric]))
        values = [v.strip() for v in cells.split("|")]
        assert len(values) == len(epochs)
        for epoch, value in zip(epochs, values):
            if value == "-":
                assert epoch not in curve, (run, epoch)
            else:
                assert float(value) == pytest.approx(curve[epoch], abs=0.51), (run, epoch)
