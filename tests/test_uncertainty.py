import csv
import math
import re

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import cu_cluster
from toy_models import lab_frame_callable

from symmd import InstabilityError, Monitor, SymmetryCalculator, metrics, models, o3
from symmd.cli import main
from symmd.uncertainty import (
    TrustLevels,
    alarm_level,
    frame_max,
    per_atom_errors,
    select_frames,
    trust_levels,
)


def checked(monitor_kwargs, symmetrize="none", log=None):
    """One monitored evaluation of the toy on a cluster (seed 0: same draws)."""
    monitor = Monitor(every=1, seed=0, log=log, **monitor_kwargs)
    atoms = cu_cluster()
    atoms.calc = SymmetryCalculator(
        lab_frame_callable, symmetrize=symmetrize, quadrature=2, monitor=monitor
    )
    atoms.get_forces()
    return monitor


@pytest.fixture(scope="module")
def a_max():
    """The largest per-atom A of the toy's forces as the seeded monitor estimates it."""
    value = checked({}).history[0]["a_forces_max"]
    q = o3.random_o3(2, np.random.default_rng(0))  # the monitor's first draw for seed 0
    u = models.evaluate_rotated(models.load(lab_frame_callable), cu_cluster(), q, ("forces",))
    a2, _ = metrics.sample_error(u["forces"], q, "vector")
    assert value == pytest.approx(float(a2.clamp_min(0).sqrt().max()), rel=1e-12)
    assert value > 0.1
    return value


def test_absolute_per_atom_threshold_on_both_sides(a_max):
    below = checked({"threshold": {"a_forces_max": a_max * (1 - 1e-9)}})
    assert [(e["step"], e["metric"]) for e in below.events] == [(0, "a_forces_max")]
    assert below.events[0]["value"] == pytest.approx(a_max)
    assert below.events[0]["threshold"] == pytest.approx(a_max * (1 - 1e-9))
    above = checked({"threshold": {"a_forces_max": a_max * (1 + 1e-9)}})
    assert above.events == [] and above.candidates == []


def test_trust_levels_on_both_sides_of_lo_and_hi(a_max, tmp_path):
    eps = 1e-9
    quiet = checked({"trust": (a_max * (1 + eps), 2 * a_max)})  # below lo: trusted
    assert quiet.events == [] and quiet.candidates == []
    log = tmp_path / "m.csv"
    candidate = checked({"trust": (a_max * (1 - eps), 2 * a_max)}, log=log)  # in [lo, hi)
    assert candidate.events == []
    assert candidate.candidates == [
        {
            "step": 0,
            "metric": "a_forces_max",
            "value": pytest.approx(a_max),
            "lo": a_max * (1 - eps),
            "hi": 2 * a_max,
        }
    ]
    rows = list(csv.DictReader(open(log)))
    assert rows[0]["candidates"] == "a_forces_max" and rows[0]["flags"] == ""
    assert checked({"trust": (a_max, 2 * a_max)}).candidates  # lo itself is a candidate
    flagged = checked({"trust": (0.5 * a_max, a_max * (1 - eps))})  # at or above hi
    assert [(e["step"], e["metric"]) for e in flagged.events] == [(0, "a_forces_max")]
    assert flagged.events[0]["threshold"] == a_max * (1 - eps) and flagged.candidates == []
    assert checked({"trust": (0.5 * a_max, a_max * (1 + eps))}).events == []
    assert checked({"trust": {"a_forces_max": (0.5 * a_max, a_max)}}).events  # hi itself flags


def test_trust_flags_apply_the_action_in_every_mode(a_max):
    with pytest.raises(InstabilityError, match=r"^step 0: a_forces_max = [\d.]+ exceeds its limit"):
        checked({"trust": (0.1 * a_max, 0.5 * a_max), "action": "raise"})
    averaged = checked({"trust": (0.1 * a_max, 0.5 * a_max)}, symmetrize="average")
    assert [e["metric"] for e in averaged.events] == ["a_forces_max"]
    # the same levels as a TrustLevels object
    levels = TrustLevels(0.1 * a_max, 0.5 * a_max, 0.1, 1.0, 1.0, 0.0, 0.0, 1, 1)
    assert checked({"trust": levels}).events


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"trust": (0.2, 0.1)},
            "trust: lo and hi must be levels with 0 <= lo < hi (hi may be inf), got lo=0.2, hi=0.1",
        ),
        (
            {"trust": (0.1, 0.1)},
            "trust: lo and hi must be levels with 0 <= lo < hi (hi may be inf), got lo=0.1, hi=0.1",
        ),
        (
            {"trust": (-0.1, 0.1)},
            "trust: lo and hi must be levels with 0 <= lo < hi (hi may be inf), got lo=-0.1, hi=0.1",
        ),
        ({"trust": 0.1}, "trust must be a pair (lo, hi) in eV/A or a dict of pairs, got 0.1"),
        (
            {"trust": {"a_energy_max": (0.1, 0.2)}},
            "trust: unknown metric 'a_energy_max'; per-atom metrics: ['a_forces_max']",
        ),
        (
            {"threshold": {"a_forces_max": -1.0}},
            "threshold['a_forces_max'] must be a number >= 0 (eV/A), got -1.0",
        ),
        (
            {"threshold": {"a_forces_max": 0.3}, "trust": (0.1, 0.2)},
            "give a_forces_max either as threshold['a_forces_max'] or in trust=(lo, hi), not both",
        ),
    ],
)
def test_bad_levels_give_whole_messages(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        Monitor(**kwargs)


def frames_with_maxima(maxima):
    """Frames of a cluster whose per-atom array peaks at the given values (None: no array)."""
    frames = []
    for k, peak in enumerate(maxima):
        atoms = cu_cluster(n=4, seed=k)
        if peak is not None:
            atoms.arrays["equivariance_error_forces"] = np.array([0.0, peak / 2, peak, peak / 3])
        frames.append(atoms)
    return frames


def test_select_counts_frames_made_here(tmp_path):
    frames = frames_with_maxima([0.01, 0.05, 0.1, 0.2, None, 0.3])
    found = select_frames(frames, 0.05, 0.2)
    assert found.indices == [1, 2] and found.count == 2 and found.skipped == [4]
    assert [f.arrays["equivariance_error_forces"].max() for f in found.frames] == [0.05, 0.1]
    assert select_frames(frames, 0.2).indices == [3, 5]  # hi defaults to inf
    path = tmp_path / "traj.xyz"
    ase.io.write(path, frames, format="extxyz")
    out = tmp_path / "sel.xyz"
    found = select_frames(path, 0.0, 0.05, out=out)
    assert found.indices == [0] and len(ase.io.read(out, ":")) == 1
    none = select_frames(path, 0.5, 1.0, out=out)
    assert none.count == 0 and out.exists() and out.stat().st_size == 0


def test_select_command_prints_the_count_including_zero(tmp_path, capsys):
    path, out = tmp_path / "traj.xyz", tmp_path / "sel.xyz"
    ase.io.write(path, frames_with_maxima([0.01, 0.05, None, 0.2]), format="extxyz")
    assert main(["select", str(path), "--lo", "0.04", "--hi", "0.3", "-o", str(out)]) == 0
    assert capsys.readouterr().out == (
        "selected 2 of 3 frames with max equivariance_error_forces in [0.04, 0.3) "
        f"(1 frames without equivariance_error_forces skipped); wrote {out}\n"
    )
    assert len(ase.io.read(out, ":")) == 2
    assert main(["select", str(path), "--lo", "1", "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith("selected 0 of 3 frames")
    assert main(["select", str(path), "--lo", "0.3", "--hi", "0.2", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        "symmd select: error: lo and hi must be levels with 0 <= lo < hi (hi may be inf), "
        "got lo=0.3, hi=0.2\n"
    )


def test_select_bad_input_whole_messages(tmp_path):
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, frames_with_maxima([None, None]), format="extxyz")
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            f"no frame of {bare} carries the per-atom array 'equivariance_error_forces' (2 frames); "
            "write the trajectory with `symmd md --trajectory` (frames at checked steps carry it)"
        )
        + "$",
    ):
        select_frames(bare, 0.0, 1.0)
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape("lo and hi must be levels with 0 <= lo < hi (hi may be inf), got lo=-1, hi=1")
        + "$",
    ):
        select_frames(bare, -1, 1)


def test_trust_levels_by_hand():
    # frames: predicted max A and true max error; tolerance 0.1
    predicted = [0.01, 0.02, 0.03, 0.07, 0.04, 0.06, 0.08, 0.10]
    error = [0.02, 0.05, 0.08, 0.09, 0.12, 0.15, 0.30, 0.40]
    levels = trust_levels(predicted, error, tolerance=0.1, recall=0.75)
    # within tolerance: predicted up to 0.07, so hi is just above 0.07
    assert levels.hi == np.nextafter(0.07, np.inf)
    # beyond tolerance: 0.04, 0.06, 0.08, 0.10; 3 of 4 (recall 0.75) reach 0.06
    assert levels.lo == 0.06 and tuple(levels) == (0.06, levels.hi)
    assert (levels.recall_lo, levels.false_alarm_lo) == (0.75, 0.25)
    assert (levels.recall_hi, levels.false_alarm_hi) == (0.5, 0.0)
    assert (levels.n, levels.n_above) == (8, 4)
    full = trust_levels(predicted, error, tolerance=0.1, recall=1.0)
    assert full.lo == 0.04 and full.recall_lo == 1.0 and full.false_alarm_lo == 0.25
    # a false-alarm budget lowers hi: 1 of 4 accurate values may reach it
    assert trust_levels(predicted, error, false_alarm=0.25).hi == np.nextafter(0.03, np.inf)
    # lo is capped below hi: here 0.06 would be above hi (just over 0.05)
    capped = trust_levels([0.01, 0.02, 0.03, 0.05, 0.04, 0.06, 0.08, 0.10], error, recall=0.75)
    assert capped.hi == np.nextafter(0.05, np.inf) and capped.lo == 0.05


def test_trust_levels_need_both_sides():
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            "no sample has an error above tolerance=0.1 (2 samples, errors 0.01 to 0.05); levels "
            "need samples on both sides: lower the tolerance or add harder structures (e.g. frames "
            "of a hot MD run)"
        ),
    ):
        trust_levels([0.1, 0.2], [0.01, 0.05])
    with pytest.raises(ValueError, match="^no sample has an error within tolerance=0.1 "):
        trust_levels([0.1, 0.2], [0.2, 0.5])


def test_alarm_level_and_frame_max():
    assert alarm_level([0.3, 0.1, 0.2]) == np.nextafter(0.3, np.inf)
    assert alarm_level([0.3, 0.1, 0.2, 0.4], false_alarm=0.25) == np.nextafter(0.3, np.inf)
    assert frame_max([0.1, 0.5, 0.2, 0.3, 0.05], [0, 0, 1, 1, 2]).tolist() == [0.5, 0.3, 0.05]


def test_per_atom_errors_match_the_monitor_and_the_rule():
    frames = [cu_cluster(seed=0), cu_cluster(n=6, seed=1)]
    exact = per_atom_errors(lab_frame_callable, frames, quadrature=4)
    q = o3.quadrature(4)
    u = models.evaluate_rotated(models.load(lab_frame_callable), frames, q, ("forces",))
    assert np.allclose(exact["a"], metrics.equivariance_error(u["forces"], q, "vector").numpy())
    assert exact["frame"].tolist() == [0] * 13 + [1] * 6 and "error" not in exact
    # the monitor's estimator (seed 0, first draw) on the first frame
    sampled = per_atom_errors(lab_frame_callable, frames[0], seed=0)
    assert sampled["a"].max() == pytest.approx(checked({}).history[0]["a_forces_max"], rel=1e-12)
    # labels: a known offset of each atom's force
    raw = models.evaluate_rotated(
        models.load(lab_frame_callable), frames[0], torch.eye(3, dtype=torch.float64), ("forces",)
    )["forces"][0].numpy()
    offsets = np.zeros_like(raw)
    offsets[:, 1] = np.linspace(0.0, 0.6, len(raw))
    labelled = frames[0].copy()
    labelled.calc = SinglePointCalculator(labelled, forces=raw + offsets, energy=0.0)
    with_labels = per_atom_errors(lab_frame_callable, labelled, seed=0)
    assert np.allclose(with_labels["error"], offsets[:, 1], atol=1e-12)


def test_diagnose_reports_per_atom_rank_statistics():
    from symmd import diagnose

    atoms = cu_cluster()
    a = per_atom_errors(lab_frame_callable, atoms, quadrature=2)["a"]  # diagnose's rule
    raw = models.evaluate_rotated(
        models.load(lab_frame_callable), atoms, torch.eye(3, dtype=torch.float64), ("forces",)
    )["forces"][0].numpy()
    rank = np.argsort(np.argsort(a))  # rank of each atom's A, 0..12 (A has no ties)
    # errors 0.02 x rank: the same order as A; 0.02 x (12 - rank): the reverse order
    for norms, rho, auc in ((0.02 * rank, 1.0, 1.0), (0.02 * (12 - rank), -1.0, 0.0)):
        offsets = np.zeros_like(raw)
        offsets[:, 0] = norms
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, forces=raw + offsets, energy=0.0)
        d = diagnose(lab_frame_callable, labelled, max_lambda=1, properties=["forces"])
        acc = d.properties["forces"]["accuracy"]
        assert acc["spearman"] == pytest.approx(rho, abs=1e-12) and acc["roc_auc"] == auc
        assert acc["n_above"] == 7 and acc["auc_threshold"] == 0.1  # 0.12 ... 0.24 eV/A
        assert f"Spearman(A, |error|) {rho:.3f}, ROC-AUC {auc:.3f}" in d.table()


def test_diagnose_rank_statistics_are_null_when_undefined(tmp_path):
    from symmd import diagnose

    atoms = cu_cluster()
    raw = models.evaluate_rotated(
        models.load(lab_frame_callable), atoms, torch.eye(3, dtype=torch.float64), ("forces",)
    )["forces"][0].numpy()
    atoms.calc = SinglePointCalculator(atoms, forces=raw, energy=0.0)  # no atom above 0.1
    d = diagnose(lab_frame_callable, atoms, max_lambda=1, properties=["forces"])
    acc = d.to_dict()["properties"]["forces"]["accuracy"]
    assert acc["roc_auc"] is None and acc["n_above"] == 0
    assert math.isnan(d.properties["forces"]["accuracy"]["roc_auc"])


@pytest.mark.slow
def test_md_trajectory_frames_at_checked_steps_carry_the_per_atom_error(tmp_path, capsys):
    traj, log, out = tmp_path / "md.xyz", tmp_path / "md.csv", tmp_path / "sel.xyz"
    args = ["md", "--steps", "8", "--monitor-every", "4", "--trajectory-every", "2", "--quiet"]
    assert main([*args, "--trajectory", str(traj), "--log", str(log)]) == 0
    frames = ase.io.read(traj, ":")
    rows = {int(r["step"]): float(r["a_forces_max"]) for r in csv.DictReader(open(log))}
    assert sorted(rows) == [0, 4, 8] and len(frames) == 5  # frames at steps 0, 2, 4, 6, 8
    for step, frame in zip(range(0, 9, 2), frames):
        if step in rows:  # checked: the monitor's per-atom values, eV/A
            a = frame.arrays["equivariance_error_forces"]
            assert a.shape == (32,) and a.max() == pytest.approx(rows[step], rel=1e-6)
        else:  # unchecked steps carry none (no stale values)
            assert "equivariance_error_forces" not in frame.arrays
    capsys.readouterr()
    middle = sorted(rows.values())[1] * (1 - 1e-6)  # extxyz keeps 8 decimals
    assert main(["select", str(traj), "--lo", str(middle), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith("selected 2 of 3 frames")
    assert len(ase.io.read(out, ":")) == 2


def test_md_trust_levels_are_checked_with_one_line(tmp_path, capsys):
    args = ["md", "--steps", "1", "--quiet", "--log", str(tmp_path / "m.csv")]
    assert main([*args, "--trust", "0.2", "0.1"]) == 2
    assert capsys.readouterr().err == (
        "symmd md: error: trust: lo and hi must be levels with 0 <= lo < hi (hi may be inf), "
        "got lo=0.2, hi=0.1\n"
    )
    with pytest.raises(SystemExit):
        main([*args, "--trust", "-0.1", "0.1"])
    assert "argument --trust: must be a number >= 0, got '-0.1'" in capsys.readouterr().err


@pytest.mark.slow
def test_readme_recipe_for_the_levels_runs(tmp_path, monkeypatch):
    import pathlib

    from ase.calculators.emt import EMT

    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("Choosing the levels from a labelled validation set") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"model.pt"', repr(models.shipped_model()))
    frames = []
    for seed, rattle in enumerate([0.0, 0.005, 0.01, 0.05, 0.1, 0.2]):
        atoms = models.cual_cell(seed=seed, rattle=rattle)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    monkeypatch.chdir(tmp_path)
    ase.io.write("valid.xyz", frames)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    lo, hi = scope["levels"]
    assert 0 < lo < hi and scope["monitor"].trust == {"a_forces_max": (lo, hi)}
