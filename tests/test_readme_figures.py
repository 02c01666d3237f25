"""Every figure README.md quotes is asserted here: recomputed (in reduced form
where the full run takes minutes) or, for long trainings and benchmarks,
checked against the data file its command wrote and the repository ships."""

import json
import pathlib
import re

import numpy as np
import pytest

from symmd import diagnose, models, o3

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quoted(pattern: str) -> tuple[str, ...]:
    """The groups of ``pattern`` in the README (which must quote it)."""
    match = re.search(pattern, README, flags=re.S)
    assert match, f"README no longer quotes {pattern!r}"
    return match.groups()


def test_quadrature_size_table_matches_the_rules():
    rows = re.findall(r"^\| (\d) \| ([^|]+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", README, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 10))
    for degree, _, ours, theirs, ratio in rows:
        L = int(degree)
        assert int(ours) == len(o3.quadrature(L))
        assert int(theirs) == o3.metatomic_size(L)
        assert abs(float(ratio) - int(theirs) / int(ours)) <= 0.05 + 1e-9  # one decimal


@pytest.mark.slow
def test_shipped_pet_spectrum_figures():
    energy_out, energy_above, forces_out = quoted(
        r"the energy has all but ([\d.e-]+) of its weight in \(0,\+1\), ([\d.e-]+) of it above\s+"
        r"lambda = 3; the forces all but ([\d.e-]+) in \(1,\+1\)"
    )
    frames = [models.cual_cell(seed=s, rattle=0.08) for s in range(2)]  # the example's cells
    d = diagnose(models.shipped_model(), frames, max_lambda=3, properties=["energy", "forces"])
    energy, forces = d.properties["energy"], d.properties["forces"]
    assert 1 - np.mean(energy["spectrum"][(0, 1)]) == pytest.approx(float(energy_out), rel=0.05)
    assert np.mean(energy["above"]) == pytest.approx(float(energy_above), rel=0.1)
    assert 1 - np.mean(forces["spectrum"][(1, 1)]) == pytest.approx(float(forces_out), rel=0.05)


@pytest.mark.slow
def test_model_error_beside_a_figures():
    from ase.calculators.emt import EMT

    ratio_f, abs_f, a_f, ratio_e, ratio_s = quoted(
        r"median force error is\s+([\d.]+)x its median A_F \(([\d.e-]+) vs ([\d.e-]+) eV/A\), "
        r"the energy's ([\d.]+)x and the\s+stress's ([\d.]+)x"
    )
    frames = []
    for seed in range(4):
        atoms = models.cual_cell(seed=seed, rattle=0.08)
        atoms.calc = EMT()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        frames.append(atoms)
    d = diagnose(models.shipped_model(), frames, max_lambda=2)
    acc = {name: d.properties[name]["accuracy"] for name in ("energy", "forces", "stress")}
    assert acc["forces"]["ratio"] == pytest.approx(float(ratio_f), rel=0.03)
    assert acc["forces"]["median_abs_error"] == pytest.approx(float(abs_f), rel=0.03)
    assert acc["forces"]["median_equivariance_error"] == pytest.approx(float(a_f), rel=0.05)
    assert acc["energy"]["ratio"] == pytest.approx(float(ratio_e), rel=0.03)
    assert acc["stress"]["ratio"] == pytest.approx(float(ratio_s), rel=0.03)


def test_training_spectra_figure_is_that_of_the_committed_data():
    (ratio,) = quoted(r"the energy keeps ([\d.]+)x more weight outside \(0,\+1\)")
    data = json.loads((ROOT / "docs/figures/training_spectra.json").read_text())

    def breaking(run):  # last epoch, as a fraction of the full mean square
        entry = data[run]["diagnoses"][-1]["properties"]["energy"]
        allowed = np.array(entry["spectrum"]["0,1"])
        above = np.array(entry.get("rest", np.zeros_like(allowed)))
        return float(np.mean(1 - allowed * (1 - above)))

    assert breaking("noaug") / breaking("aug") == pytest.approx(float(ratio), rel=0.03)


def test_finetune_table_is_that_of_the_committed_data():
    data = json.loads((ROOT / "benchmarks/results/finetune_tradeoff.json").read_text())["models"]
    number = r"([\d.]+|-)"
    rows = re.findall(
        r"^\| (plates|Cu/Al)[^|]*\| (not fine-tuned|readout|lora|all) \| "
        + number
        + r" \| ([\d.]+) \| ([\d.]+) \| ([+-]\d+ %|-) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x"
        r" \| ([\d.e-]+) \| (\d+|-) \|$",
        README,
        flags=re.M,
    )
    names = {"plates": "plates", "Cu/Al": "cual"}
    assert sorted({(names[r[0]], r[1]) for r in rows}) == sorted(
        [(m, "not fine-tuned") for m in data]
        + [(m, mode) for m in data for mode in data[m]["modes"]]
    )
    for model, mode, gamma, e_mae, f_mae, change, a_e, a_f, lower, md, seconds in rows:
        entry = data[names[model]]
        raw = entry["raw"]
        run = entry["modes"].get(mode, {"gamma": None, "test": raw, "train_seconds": None})
        t = run["test"]
        assert (gamma == "-") == (run["gamma"] is None)
        if gamma != "-":
            assert float(gamma) == run["gamma"]
        assert float(e_mae) == pytest.approx(1e3 * t["energy_mae"], abs=0.006)
        assert float(f_mae) == pytest.approx(1e3 * t["forces_mae"], abs=0.06)
        if change != "-":
            percent = 100 * (t["forces_mae"] / raw["forces_mae"] - 1)
            assert float(change.rstrip(" %")) == pytest.approx(percent, abs=0.6)
        assert float(a_e) == pytest.approx(1e3 * t["energy_A_per_atom_rms"], abs=0.0006)
        assert float(a_f) == pytest.approx(1e3 * t["forces_A_rms"], abs=0.006)
        assert float(lower) == pytest.approx(raw["forces_A_rms"] / t["forces_A_rms"], abs=0.006)
        assert float(md) == pytest.approx(t["md_rel_forces"], rel=0.01)
        if seconds != "-":
            assert float(seconds) == pytest.approx(run["train_seconds"], abs=0.6)
        else:
            assert run["train_seconds"] is None


def test_auto_quadrature_picks_are_those_of_the_benchmark():
    picks = quoted(
        r"picks the tetrahedral rule\s+\((\d+) copies\) for 1e-3 eV/A, the degree-(\d) SO\(3\) design "
        r"\((\d+)\) for 1e-4 and the\s+degree-(\d) design \((\d+)\) for 1e-5"
    )
    n_t, deg_4, n_4, deg_5, n_5 = (int(x) for x in picks)
    data = json.loads((ROOT / "benchmarks/results/auto_quadrature.json").read_text())
    chosen = {r["tolerance"]: r for r in data["recommendations"]}
    assert chosen[1e-3]["chosen"] == 2 and n_t == len(o3.quadrature(2))
    assert chosen[1e-4]["chosen"] == deg_4 and n_4 == len(o3.quadrature(deg_4))
    assert chosen[1e-5]["chosen"] == deg_5 and n_5 == len(o3.quadrature(deg_5))
    # each the smallest that is enough against the degree-11 reference
    assert all(r["chosen"] == r["needed"] for r in data["recommendations"])
