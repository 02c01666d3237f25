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


def test_finetune_prose_is_that_of_the_benchmark():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import finetune_tradeoff

    report = json.loads((ROOT / "benchmarks/results/finetune_tradeoff.json").read_text())
    assert finetune_tradeoff.markdown(report) in README
    data = report["models"]

    def lower_and_change(model, mode):
        raw, t = data[model]["raw"], data[model]["modes"][mode]["test"]
        return raw["forces_A_rms"] / t["forces_A_rms"], 100 * (
            t["forces_mae"] / raw["forces_mae"] - 1
        )

    lora, lora_up, full, full_up = quoted(
        r'`"lora"` ([\d.]+)x lower at\s+\+(\d+) %, `"all"` ([\d.]+)x at \+(\d+) %'
    )
    for (value, up), mode in zip([(lora, lora_up), (full, full_up)], ["lora", "all"]):
        want, change = lower_and_change("plates", mode)
        assert float(value) == pytest.approx(want, abs=0.006)
        assert int(up) == round(change)
    md_raw, md_all = quoted(r"MD A_F/F falls from ([\d.]+) % to ([\d.]+) %")
    assert float(md_raw) == pytest.approx(100 * data["plates"]["raw"]["md_rel_forces"], abs=0.06)
    plates_all = data["plates"]["modes"]["all"]["test"]["md_rel_forces"]
    assert float(md_all) == pytest.approx(100 * plates_all, abs=0.06)
    readout_rows = {r["run"]: r for r in data["plates"]["modes"]["readout"]["scan"]["rows"]}
    ratio, up = quoted(r"gamma = 100 gives ([\d.]+)x lower A_F at \+(\d+) % MAE")
    g100 = readout_rows["gamma=100"]
    assert float(ratio) == pytest.approx(
        readout_rows["raw"]["forces_A_rms"] / g100["forces_A_rms"], abs=0.06
    )
    assert int(up) == round(100 * g100["mae_increase"])
    assert data["plates"]["modes"]["readout"]["gamma"] is None
    best, best_up, second, third = quoted(
        r'best within budget is `"all"`, ([\d.]+)x lower at \+(\d+) %, then `"lora"` ([\d.]+)x\s+'
        r"and the readout ([\d.]+)x"
    )
    want, change = lower_and_change("cual", "all")
    assert float(best) == pytest.approx(want, abs=0.006) and int(best_up) == round(change)
    assert float(second) == pytest.approx(lower_and_change("cual", "lora")[0], abs=0.006)
    assert float(third) == pytest.approx(lower_and_change("cual", "readout")[0], abs=0.006)
    (md,) = quoted(r"\(A_F/F ([\d.]+) %\s+in MD\)")
    assert float(md) == pytest.approx(100 * data["cual"]["raw"]["md_rel_forces"], abs=0.06)
    lo, hi, up_lo, up_hi = quoted(
        r"set: ([\d.]+)-([\d.]+)x lower A_F at \+(\d+) to \+(\d+) % force MAE"
    )
    rows = [
        next(r for r in data["cual"]["modes"][m]["scan"]["rows"] if r["run"] == "gamma=300")
        for m in ("readout", "lora", "all")
    ]
    raw_a = data["cual"]["modes"]["all"]["scan"]["rows"][0]["forces_A_rms"]
    ratios = [raw_a / r["forces_A_rms"] for r in rows]
    ups = [100 * r["mae_increase"] for r in rows]
    assert float(lo) == pytest.approx(min(ratios), abs=0.006)
    assert float(hi) == pytest.approx(max(ratios), abs=0.006)
    assert (int(up_lo), int(up_hi)) == (round(min(ups)), round(max(ups)))
    # the goals of the issue, as README states them: met without augmentation, not with
    assert lower_and_change("plates", "lora")[0] >= 3 and lower_and_change("plates", "all")[0] >= 3
    assert lower_and_change("cual", "all")[0] < 5


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


def test_direct_force_limits_and_the_mts_input_are_the_codes():
    import sys

    from ase import units

    from symmd import conservation

    nve, thermostat, rate = quoted(
        r"limit (\d+) in NVE, (\d+) with a thermostat.*?into rigid motion within (\d+) ps"
    )
    assert float(nve) == conservation.NVE_LIMIT
    assert float(thermostat) == conservation.THERMOSTAT_LIMIT
    assert float(rate) * 1000 * units.fs == conservation.RATE_TIME
    # the README's MTS input has the forces and levels that tests/test_ipi.py runs
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ipi_mts

    (xml,) = quoted(r"### Multiple time stepping.*?```xml\n(.*?)```")
    for line in re.findall(r"<force forcefield=.*?</force>|<fixcom>.*?</fixcom>", ipi_mts.INPUT):
        assert line in xml, line
    inner, outer = quoted(r"makes (\d+) inner steps\s+of 1 fs per outer step of (\d+) fs")
    assert f"<nmts>[1, {inner}]</nmts>" in xml and f">{float(outer)}</timestep>" in xml
    assert (int(inner), float(outer)) == (4, 4.0)  # the scheme tests/test_ipi.py runs


UNCERTAINTY_LABELS = {
    "A, 2 draws (the monitor)": "A (2 draws)",
    "A, degree-7 rule": "A (degree 7)",
    "LLPR (16 members)": "LLPR",
    "ensemble (4 PETs)": "ensemble",
}


def test_uncertainty_tables_are_those_of_the_benchmark():
    data = json.loads((ROOT / "benchmarks/results/uncertainty.json").read_text())
    names = "|".join(re.escape(label) for label in UNCERTAINTY_LABELS)
    rows = re.findall(
        rf"^\| ({names}) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| ([\d.]+)x \| ([^|]+) \|$",
        README,
        flags=re.M,
    )
    assert [r[0] for r in rows] == list(UNCERTAINTY_LABELS)
    stats = [("atom", "spearman"), ("atom", "roc_auc"), ("frame", "spearman"), ("frame", "roc_auc")]
    for label, *cols, ratio, setup in rows:
        key = UNCERTAINTY_LABELS[label]
        for col, (level, stat) in zip(cols, stats):
            quoted_values = [None if v == "n/a" else float(v) for v in col.split(" / ")]
            expected = [
                data["accuracy"][s][key][level][stat] for s in ("held-out EMT", "hot MD", "all")
            ]
            for got, want in zip(quoted_values, expected):
                assert (got is None and np.isnan(want)) or got == pytest.approx(want, abs=0.0051)
        assert float(ratio) == pytest.approx(data["cost"][key]["ratio"], abs=0.051)
        minutes = data["setup_s"][key] / 60
        assert setup == "none" if minutes == 0 else float(setup.split()[0]) == round(minutes)
    warning = data["warning"]
    found = re.findall(
        rf"^\| ({names}), ([\d.]+) x held-out max \| ([\d.e-]+) \| (\d+) \((\d+)-(\d+)\) \| "
        r"(\d+) of (\d+) \| (\d+) of (\d+) \|$",
        README,
        flags=re.M,
    )
    table = {(r["signal"], r["margin"]): r for r in warning["rows"]}
    assert len(found) == len(warning["rows"]) - 1  # and the physical check's row
    for label, margin, level, median, low, high, flagged, runs, alarms, stable in found:
        row = table[(UNCERTAINTY_LABELS[label], float(margin))]
        assert float(level) == pytest.approx(row["level"], rel=0.005)
        assert (int(median), int(low), int(high)) == (
            round(row["median_lead"]),
            min(row["leads"]),
            max(row["leads"]),
        )
        assert (int(flagged), int(runs)) == (row["flagged_before_overlap"], len(row["leads"]))
        assert (int(alarms), int(stable)) == (row["false_alarm_runs"], warning["stable_runs"])
    physical = warning["rows"][-1]
    median, low, high, alarms = quoted(
        r"\| min distance < 0\.6 x covalent[^|]*\| n/a \| (\d+) \((\d+)-(\d+)\) \| \d+ of \d+ \| "
        r"(\d+) of \d+ \|"
    )
    assert (int(median), int(low), int(high)) == (
        round(physical["median_lead"]),
        min(physical["leads"]),
        max(physical["leads"]),
    )
    assert int(alarms) == physical["false_alarm_runs"]


def test_uncertainty_prose_is_that_of_the_benchmark():
    data = json.loads((ROOT / "benchmarks/results/uncertainty.json").read_text())
    acc, sets = data["accuracy"], data["sets"]
    held_frames, held_atoms, hot_frames, hot_atoms = quoted(
        r"truth: (\d+) held-out EMT frames \((\d+) atoms\) and (\d+) frames\s+of Langevin MD of "
        r"the shipped PET \((\d+) atoms\)"
    )
    assert (int(held_frames), int(held_atoms)) == (
        sets["held-out EMT"]["frames"],
        sets["held-out EMT"]["atoms"],
    )
    assert (int(hot_frames), int(hot_atoms)) == (sets["hot MD"]["frames"], sets["hot MD"]["atoms"])
    (members,) = quoted(r"of its (\d+)-member last-layer ensemble")
    assert int(members) == data["llpr_members"]
    low, high = quoted(r"well\s+\(Spearman ([\d.]+)-([\d.]+)\)")
    held = [acc["held-out EMT"][k]["atom"]["spearman"] for k in UNCERTAINTY_LABELS.values()]
    assert (float(low), float(high)) == pytest.approx((min(held), max(held)), abs=0.0051)
    rho, auc = quoted(r"as LLPR and the committee \(Spearman ([\d.]+), ROC-AUC ([\d.]+)\)")
    exact = acc["hot MD"]["A (degree 7)"]["atom"]
    assert (float(rho), float(auc)) == pytest.approx(
        (exact["spearman"], exact["roc_auc"]), abs=0.0051
    )
    rho_atom, rho_frame = quoted(
        r"noisier per atom \(Spearman ([\d.]+) on hot\s+MD\).*?\(Spearman ([\d.]+) per frame\)"
    )
    two = acc["hot MD"]["A (2 draws)"]
    assert float(rho_atom) == pytest.approx(two["atom"]["spearman"], abs=0.0051)
    assert float(rho_frame) == pytest.approx(two["frame"]["spearman"], abs=0.0051)
    assert np.sqrt(2 / 3) == pytest.approx(0.8, abs=0.05)  # chi-square, 3 dof: sqrt(2/3)
    ratios = quoted(
        r"median error is\s+([\d.]+)x the 2-draw A and ([\d.]+)x the exact A, but ([\d.]+)x the "
        r"LLPR value and\s+([\d.]+)x the committee's deviation"
    )
    for quoted_ratio, key in zip(ratios, ("A (2 draws)", "A (degree 7)", "LLPR", "ensemble")):
        digits = len(quoted_ratio.partition(".")[2])
        want = data["calibration"][key]["ratio"]
        assert float(quoted_ratio) == pytest.approx(want, abs=0.51 * 10**-digits)
    check, per_step, llpr, committee = quoted(
        r"a check costs ([\d.]+)x a plain step \(two extra copies in one\s+batch; every 10 steps, "
        r"(\d+) % per step\), LLPR ([\d.]+)x \(\d+ backward\s+passes\), the committee ([\d.]+)x"
    )
    cost = data["cost"]
    assert float(check) == pytest.approx(cost["A (2 draws)"]["ratio"], abs=0.051)
    assert int(per_step) == round(100 * (cost["A (2 draws)"]["ratio"] - 1) / 10)
    assert float(llpr) == pytest.approx(cost["LLPR"]["ratio"], abs=0.051)
    assert float(committee) == pytest.approx(cost["ensemble"]["ratio"], abs=0.051)
    w = data["warning"]
    frames, every, seeds, first, last, runs, checks = quoted(
        r"held-out data \((\d+) frames:.*?checked every (\d+) steps.*?over (\d+) seeds at 6000 K "
        r"\(overlap after (\d+)-(\d+) steps;.*?false alarms over (\d+) stable runs\s+of 500 "
        r"steps at 300-600 K \((\d+) checks\)"
    )
    assert (int(frames), int(every), int(seeds)) == (
        w["calibration_frames"],
        w["check_every"],
        len(w["overlap_steps"]),
    )
    assert (int(first), int(last)) == (min(w["overlap_steps"]), max(w["overlap_steps"]))
    assert (int(runs), int(checks)) == (w["stable_runs"], w["stable_checks"])
    rows = {(r["signal"], r["margin"]): r for r in w["rows"]}
    leads = quoted(
        r"A with a median lead of (\d+) steps,\s+LLPR (\d+), the committee (\d+), against (\d+) "
        r"for the distance check alone.*?falls to\s+(\d+) steps, while LLPR keeps (\d+) and the "
        r"committee (\d+)\."
    )
    keys = [("A (2 draws)", 1.0), ("LLPR", 1.0), ("ensemble", 1.0), ("min_distance", None)]
    keys += [("A (2 draws)", 2.0), ("LLPR", 2.0), ("ensemble", 2.0)]
    assert [int(x) for x in leads] == [round(rows[k]["median_lead"]) for k in keys]
    for key in keys[:3]:  # the goal: median lead >= 50 steps, no false alarm
        assert rows[key]["median_lead"] >= 50 and rows[key]["false_alarm_runs"] == 0
    early, late = quoted(r"the first flags come (\d+)-(\d+) steps into the run")
    flags = [f for r in w["rows"] if r["margin"] == 1.0 for f in r["first_flag"]]
    assert (int(early), int(late)) == (min(flags), max(flags))


def test_stability_table_and_prose_are_those_of_the_benchmark():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stability

    result = json.loads((ROOT / "benchmarks/results/stability.json").read_text())
    assert stability.markdown(result) in README
    assert (ROOT / "docs/figures/stability.png").stat().st_size > 10_000
    nve = {system: by["nve"] for system, by in result["summary"].items()}
    cost = result["cost"]

    def mean(system, mode, key):
        return nve[system][mode][key]["mean"]

    def mean_sd(system, mode, key):
        stat = nve[system][mode][key]
        return f"{stat['mean']:.1f} ± {stat['sd']:.1f}"

    p_cluster, p_bulk = quoted(
        r"grows to\s+([\d.]+) \(cluster\) and ([\d.]+) \(cell\) thermal units"
    )
    assert p_cluster == f"{mean('cluster', 'direct', 'momentum_max'):.2g}"
    assert p_bulk == f"{mean('bulk', 'direct', 'momentum_max'):.2g}"
    fail_cluster, fail_bulk, heat = quoted(
        r"after ([\d.]+ ± [\d.]+) ps \(cluster\) and\s+([\d.]+ ± [\d.]+) ps \(cell\), the first "
        r"10 % of heating already done after\s+([\d.]+) ps"
    )
    assert fail_cluster == mean_sd("cluster", "direct", "time_to_failure_ps")
    assert fail_bulk == mean_sd("bulk", "direct", "time_to_failure_ps")
    assert all(nve[s]["direct"]["failed"] == nve[s]["direct"]["seeds"] == 4 for s in nve)
    assert heat == f"{min(mean(s, 'direct', 'time_to_10pct_heat_ps') for s in nve):.1f}"
    assert all(nve[s]["direct"]["flagged_before_10pct_heat"] == 4 for s in nve)
    (project,) = quoted(r"\(max dP and dL at most ([\d.e+-]+) thermal units\)")
    exact = [
        mean(s, "direct+project", k)
        for s in nve
        for k in ("momentum_max", "angular_momentum_max")
        if nve[s]["direct+project"][k]
    ]
    assert project == f"{max(exact):.0e}" and max(exact) < 1e-13
    assert all(nve[s]["direct+project"]["failed"] == 0 for s in nve)
    drift_cluster, drift_bulk, conservative = quoted(
        r"still drifts by ([\d.]+ ± [\d.]+) \(cluster\) and ([\d.]+ ± [\d.]+)\s+\(cell\) "
        r"meV/atom/ps, against at most ([\d.e+-]+) for conservative forces"
    )
    assert drift_cluster == mean_sd("cluster", "direct+project", "energy_drift_meV_per_atom_per_ps")
    assert drift_bulk == mean_sd("bulk", "direct+project", "energy_drift_meV_per_atom_per_ps")
    drifts = [abs(mean(s, "conservative", "energy_drift_meV_per_atom_per_ps")) for s in nve]
    assert conservative == f"{max(drifts):.0e}"
    avg_cluster, avg_bulk, avg_project = quoted(
        r"change by ([\d.]+) \(cluster\) and ([\d.]+) \(cell\) thermal units;\s+"
        r'"average\+project" keeps it at round-off \(([\d.e+-]+)\)'
    )
    assert avg_cluster == f"{mean('cluster', 'direct+average2', 'momentum_max'):.2g}"
    assert avg_bulk == f"{mean('bulk', 'direct+average2', 'momentum_max'):.2g}"
    both = max(mean(s, "direct+average2+project", "momentum_max") for s in nve)
    assert avg_project == f"{both:.0e}" and both < 1e-13
    mts_cluster, mts_bulk, cost_cluster, cost_bulk = quoted(
        r"drift\s+([\d.e+-]+) \(cluster\) and ([\d.e+-]+) \(cell\) meV/atom/ps, at\s+"
        r"([\d.]+)x \(cluster\) and ([\d.]+)x \(cell\)"
    )
    assert mts_cluster == f"{mean('cluster', 'direct+mts', 'energy_drift_meV_per_atom_per_ps'):.0e}"
    assert mts_bulk == f"{mean('bulk', 'direct+mts', 'energy_drift_meV_per_atom_per_ps'):.0e}"
    assert cost_cluster == f"{cost['cluster']['direct+mts']['vs_conservative']:.2f}"
    assert cost_bulk == f"{cost['bulk']['direct+mts']['vs_conservative']:.2f}"
    momentum, angular = quoted(
        r"float32 round-off, ([\d.e+-]+)\), but not angular momentum.*?changes by\s+"
        r"([\d.]+) thermal units in 3 ps"
    )
    assert momentum == f"{max(mean(s, 'conservative', 'momentum_max') for s in nve):.0e}"
    assert angular == f"{mean('cluster', 'conservative', 'angular_momentum_max'):.2f}"
    d_cluster, d_bulk, a2, a3, c2, c3 = quoted(
        r"direct forces cost ([\d.]+)x \(cluster\) and\s+([\d.]+)x \(cell\) a conservative "
        r"evaluation\. Averaging the direct\s+outputs costs ([\d.]+)x \(degree 2\) and ([\d.]+)x "
        r"\(degree 3\) a\s+conservative evaluation, against ([\d.]+)x and ([\d.]+)x"
    )
    assert d_cluster == f"{cost['cluster']['direct']['vs_conservative']:.2f}"
    assert d_bulk == f"{cost['bulk']['direct']['vs_conservative']:.2f}"
    assert [a2, a3, c2, c3] == [
        f"{cost['cluster'][f'{kind}+average{d}']['vs_conservative']:.1f}"
        for kind in ("direct", "conservative")
        for d in (2, 3)
    ]
