"""symmd.finetune: the equivariance penalty, its gradient, the training loop,
the saved models and the error messages."""

import json
import re

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import cu_cluster

import symmd
from symmd._finetune_budget import format_scan
from symmd.finetune import equivariance_penalty, read_labels
from symmd.models import evaluate_rotated, load
from symmd.o3 import random_o3


class PairToy(torch.nn.Module):
    """Pair energy ``sym e^-r + other e^-2r + breaking (v_z / r)^2 e^-r`` over all
    pairs of each (non-periodic) structure: ``breaking`` alone breaks O(3)."""

    def __init__(self, sym=1.0, breaking=0.2, other=0.5):
        super().__init__()
        self.sym = torch.nn.Parameter(torch.tensor(sym, dtype=torch.float64))
        self.breaking = torch.nn.Parameter(torch.tensor(breaking, dtype=torch.float64))
        self.other = torch.nn.Parameter(torch.tensor(other, dtype=torch.float64))

    def forward(self, positions, types, cell, pbc, system_index):
        n = positions.shape[0]
        i, j = torch.triu_indices(n, n, 1)
        same = system_index[i] == system_index[j]
        i, j = i[same], j[same]
        v = positions[j] - positions[i]
        r = v.norm(dim=-1)
        pair = (
            self.sym * torch.exp(-r)
            + self.other * torch.exp(-2 * r)
            + self.breaking * (v[:, 2] / r) ** 2 * torch.exp(-r)
        )
        energy = torch.zeros(cell.shape[0], dtype=positions.dtype)
        return {"energy": energy.index_add(0, system_index[i], pair)}


def clusters(n=4, labelled=True):
    frames = [cu_cluster(8, seed=s) for s in range(n)]
    if labelled:
        for atoms in frames:
            atoms.calc = EMT()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return frames


def draws(m=3, seed=0):
    return random_o3(m, np.random.default_rng(seed))


def test_engine_default_detached_and_differentiable_keeps_graph():
    model = PairToy()
    adapter = load(model)
    frames, q = clusters(2, labelled=False), draws()
    plain = evaluate_rotated(adapter, frames, q, ("energy", "forces"))
    kept = evaluate_rotated(adapter, frames, q, ("energy", "forces"), differentiable=True)
    for key in ("energy", "forces"):
        assert not plain[key].requires_grad
        assert kept[key].requires_grad
        assert torch.equal(plain[key], kept[key].detach())
    # forces keep their graph w.r.t. the parameters (double backward)
    (grad,) = torch.autograd.grad(kept["forces"].pow(2).sum(), [model.breaking])
    assert grad.abs() > 0


def test_penalty_zero_for_equivariant_positive_for_breaking():
    frames, q = clusters(3, labelled=False), draws()
    zero = equivariance_penalty(PairToy(breaking=0.0), frames, q)
    positive = equivariance_penalty(PairToy(breaking=0.2), frames, q)
    assert float(zero) < 1e-28
    assert float(positive) > 1e-7


def test_penalty_gradient_matches_finite_differences():
    frames, q = clusters(2, labelled=False), draws(4, seed=3)
    model = PairToy(breaking=0.3)
    params = [model.sym, model.breaking, model.other]
    penalty = equivariance_penalty(model, frames, q, scales={"energy": 0.5, "forces": 2.0})
    grads = torch.autograd.grad(penalty, params)
    h = 1e-5
    for param, grad in zip(params, grads):
        values = []
        for step in (h, -h):
            with torch.no_grad():
                param += step
            values.append(
                float(equivariance_penalty(model, frames, q, scales={"energy": 0.5, "forces": 2.0}))
            )
            with torch.no_grad():
                param -= step
        fd = (values[0] - values[1]) / (2 * h)
        assert abs(float(grad) - fd) <= 1e-7 * abs(float(penalty)) / h + 1e-6 * abs(fd)
    assert float(grads[1]) > 0  # the breaking weight is the one that matters
    assert abs(float(grads[0])) < 1e-15 and abs(float(grads[2])) < 1e-15


def test_large_gamma_without_labels_removes_only_the_breaking_parameter():
    model = PairToy(breaking=0.2)
    result = symmd.finetune(
        model,
        clusters(4, labelled=False),
        gamma=100.0,
        labels=False,
        trainable=["sym", "breaking"],
        epochs=40,
        lr=0.02,
        batch_size=2,
        seed=0,
        degree=4,
        progress=False,
    )
    tuned = result.model
    assert abs(float(tuned.breaking)) < 0.02  # from 0.2
    # its gradient is zero up to round-off (see the finite-difference test), which
    # Adam's scale-free step (g / (sqrt(v) + 1e-8)) turns into a drift
    # more than 1000x smaller than the change of the breaking weight
    assert abs(float(tuned.sym) - 1.0) < 1e-4
    assert float(model.breaking) == 0.2  # the input module is not modified
    a_f = result.metrics["metrics"]["forces"]["A_rms"]
    assert result.history[-1]["L_sigma"] < 3e-2 * result.history[0]["L_sigma"]
    assert a_f > 0


def test_frozen_parameters_bit_identical(tmp_path):
    model = PairToy(breaking=0.2)
    result = symmd.finetune(
        model,
        clusters(4),
        gamma=1.0,
        trainable="breaking",
        epochs=2,
        lr=0.01,
        batch_size=2,
        seed=0,
        degree=2,
        out=tmp_path,
        progress=False,
    )
    tuned = result.model
    assert torch.equal(tuned.sym, model.sym) and torch.equal(tuned.other, model.other)
    assert not torch.equal(tuned.breaking, model.breaking)
    saved = torch.load(result.paths["state_dict"])
    assert torch.equal(saved["breaking"], tuned.breaking)
    written = json.loads((tmp_path / "gamma_1" / "result.json").read_text())
    assert written["trainable"] == ["breaking"]
    assert written["metrics"]["forces"]["mae"] == result.metrics["metrics"]["forces"]["mae"]


def test_labels_from_info_and_arrays_metatrain_names():
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.info["energy"] = -1.5
    atoms.arrays["forces"] = np.arange(12.0).reshape(4, 3)
    atoms.info["virial"] = np.arange(9.0).reshape(3, 3)
    _, labels = read_labels([atoms])
    assert labels["energy"] == [-1.5]
    np.testing.assert_array_equal(labels["forces"][0], np.arange(12.0).reshape(4, 3))
    np.testing.assert_allclose(labels["stress"][0], -np.arange(9.0).reshape(3, 3) / 3.6**3)


def test_errors(tmp_path, pet_checkpoint):
    frames = clusters(2)
    exported = tmp_path / "model.pt"
    exported.write_bytes(b"")
    with pytest.raises(ValueError) as error:
        symmd.finetune(str(exported), frames, gamma=1.0)
    assert str(error.value) == (
        f"checkpoint={str(exported)!r} is not a metatrain checkpoint: an exported model "
        "(.pt) is TorchScript and cannot be trained; pass the .ckpt it was exported from"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), frames, gamma=1.0, trainable=["head*"])
    assert str(error.value) == (
        "no parameter matches trainable=['head*']; the model's parameters are "
        "['sym', 'breaking', 'other']"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), clusters(2, labelled=False), gamma=1.0)
    assert str(error.value) == (
        "the training set has no energy labels (looked for the ASE calculator results and "
        "atoms.info['energy']); label the structures, or pass labels=False to train on the "
        "equivariance penalty alone"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(pet_checkpoint, frames, gamma=[1.0, -0.5])
    assert str(error.value) == "gamma must be a number >= 0 (or a list of them), got -0.5"
    with pytest.raises(ValueError, match=re.escape("rotations must be an int >= 2, got 1")):
        symmd.finetune(pet_checkpoint, frames, gamma=1.0, rotations=1)


@pytest.mark.slow
def test_pet_checkpoint_round_trip(tmp_path, pet_checkpoint):
    from metatomic_ase import MetatomicCalculator
    from metatrain.utils.io import load_model

    frames = clusters(3)
    results = symmd.finetune(
        pet_checkpoint,
        frames,
        valid=frames[:2],
        gamma=[0.0, 10.0],
        epochs=1,
        lr=1e-2,
        batch_size=2,
        seed=0,
        degree=2,
        out=tmp_path,
        progress=False,
    )
    assert (tmp_path / "tradeoff.png").stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [run["gamma"] for run in summary] == [0.0, 10.0]
    original = load_model(pet_checkpoint)
    probe = clusters(1, labelled=False)[0]
    probe.positions += 0.05
    for result in results:
        tuned = dict(result.model.named_parameters())
        for name, value in original.named_parameters():
            trainable = name in result.metrics["trainable"]
            assert torch.equal(value, tuned[name]) != trainable, name
        reference = evaluate_rotated(load(result.model), probe, torch.eye(3))
        for path in (result.paths["checkpoint"], result.paths["model"]):
            again = evaluate_rotated(load(str(path)), probe, torch.eye(3))
            for key in ("energy", "forces"):
                torch.testing.assert_close(again[key], reference[key], rtol=1e-6, atol=1e-6)
        atoms = probe.copy()
        atoms.calc = MetatomicCalculator(str(result.paths["model"]))
        np.testing.assert_allclose(
            atoms.get_potential_energy(), float(reference["energy"][0]), rtol=1e-6, atol=1e-6
        )
        np.testing.assert_allclose(
            atoms.get_forces(), reference["forces"][0].numpy(), rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_cli_finetune(tmp_path, pet_checkpoint, capsys):
    import ase.io

    from symmd.cli import main

    ase.io.write(tmp_path / "train.extxyz", clusters(2))
    ase.io.write(tmp_path / "plain.extxyz", clusters(2, labelled=False))
    out = tmp_path / "out"
    args = ["finetune", pet_checkpoint, "--train", str(tmp_path / "train.extxyz"), "-o", str(out)]
    assert main([*args, "--gamma", "0", "1", "--epochs", "1", "--degree", "2", "--quiet"]) == 0
    assert (out / "tradeoff.png").exists()
    assert (out / "gamma_1" / "model.pt").exists()
    printed = capsys.readouterr().out
    assert "   gamma  E MAE meV/at" in printed and f"wrote {out}/summary.json" in printed
    plain = ["finetune", pet_checkpoint, "--train", str(tmp_path / "plain.extxyz"), "-o", str(out)]
    assert main([*plain, "--gamma", "1"]) == 2
    assert capsys.readouterr().err.startswith(
        "symmd finetune: error: the training set has no energy labels"
    )
    assert main([*args, "--gamma", "-1"]) == 2
    assert capsys.readouterr().err == (
        "symmd finetune: error: gamma must be a number >= 0 (or a list of them), got -1.0\n"
    )
    budget = ["--max-mae-increase", "0.5", "--gamma", "0", "10", "--epochs", "1", "--quiet"]
    ase.io.write(tmp_path / "valid.extxyz", clusters(3)[2:])
    tuned = tmp_path / "lora"
    lora = [*args[:-1], str(tuned), "--valid", str(tmp_path / "valid.extxyz"), "--degree", "2"]
    assert main([*lora, *budget, "--trainable", "lora", "--rank", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("budget: force MAE <= 1.5 x that of the un-fine-tuned model")
    assert "<- selected" in printed and f"wrote {tuned}/scan.json" in printed
    scan = json.loads((tuned / "scan.json").read_text())
    assert [r["run"] for r in scan["rows"]] == ["raw", "gamma=0", "gamma=10"]
    assert json.loads((tuned / "gamma_10" / "result.json").read_text())["lora"]["rank"] == 2
    assert main([*lora, *budget, "--trainable", "lora", "--rank", "0"]) == 2
    assert capsys.readouterr().err == "symmd finetune: error: rank must be an int >= 1, got 0\n"
    assert main([*lora, "--max-mae-increase", "-1"]) == 2
    assert capsys.readouterr().err.startswith(
        "symmd finetune: error: max_mae_increase must be a number >= 0"
    )
    assert main(lora) == 2
    assert capsys.readouterr().err == (
        "symmd finetune: error: give --gamma G [G ...], or --max-mae-increase to scan a "
        "default grid\n"
    )


class NCToy(PairToy):
    """PairToy plus a non-conservative force output: ``radial`` times the
    position relative to the centroid (equivariant) plus ``field`` along the lab
    z axis (breaks O(3))."""

    extra_outputs = {"non_conservative_force": "vector"}

    def __init__(self):
        super().__init__(breaking=0.0)
        self.radial = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.field = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))

    def forward(self, positions, types, cell, pbc, system_index):
        out = super().forward(positions, types, cell, pbc, system_index)
        count = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index, torch.ones_like(positions[:, 0])
        )
        centroid = torch.zeros_like(cell[:, 0]).index_add(0, system_index, positions)
        relative = positions - (centroid / count[:, None])[system_index]
        lab_z = torch.tensor([0.0, 0.0, 1.0], dtype=positions.dtype)
        out["non_conservative_force"] = self.radial * relative + self.field * lab_z
        return out


def test_non_conservative_outputs_enter_the_penalty():
    result = symmd.finetune(
        NCToy(),
        clusters(4),
        gamma=1000.0,
        trainable=["radial", "field"],
        epochs=30,
        lr=0.01,
        batch_size=2,
        seed=0,
        degree=2,
        progress=False,
    )
    measured = result.metrics["metrics"]
    assert set(measured) >= {"energy", "forces", "non_conservative_force"}
    assert "mae" in measured["non_conservative_force"]  # against the force labels
    assert abs(float(result.model.field)) < 0.02  # from 0.2
    assert measured["forces"]["A_rms"] < 1e-12  # the conservative part is exact


class MLPToy(torch.nn.Module):
    """Energy: a sum over atoms of an MLP of the position relative to the
    centroid and its norm (not invariant); its ``torch.nn.Linear`` layers are
    what LoRA adapts."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inner = torch.nn.Linear(4, 8, dtype=torch.float64)
        self.outer = torch.nn.Linear(8, 1, dtype=torch.float64)

    def forward(self, positions, types, cell, pbc, system_index):
        n_sys = cell.shape[0]
        count = torch.zeros(n_sys, dtype=positions.dtype).index_add(
            0, system_index, torch.ones_like(positions[:, 0])
        )
        centroid = torch.zeros(n_sys, 3, dtype=positions.dtype).index_add(
            0, system_index, positions
        )
        v = positions - (centroid / count[:, None])[system_index]
        x = torch.cat([v, v.norm(dim=-1, keepdim=True)], dim=-1)
        per_atom = self.outer(torch.tanh(self.inner(x)))[:, 0]
        energy = torch.zeros(n_sys, dtype=positions.dtype)
        return {"energy": energy.index_add(0, system_index, per_atom)}


def predictions(model, frames, q):
    return evaluate_rotated(load(model), frames, q, ("energy", "forces"))


def test_zero_initialised_lora_leaves_predictions_unchanged_and_merges_exactly():
    from symmd._lora import LowRankAdapters, linear_layers

    model, frames, q = MLPToy(), clusters(2, labelled=False), draws(3)
    before = predictions(model, frames, q)
    torch.manual_seed(1)
    lora = LowRankAdapters(model, linear_layers(model), rank=2, alpha=3.0)
    assert [tuple(a.shape) for a in lora.a] == [(2, 4), (2, 8)]
    assert [tuple(b.shape) for b in lora.b] == [(8, 2), (1, 2)]
    adapted = predictions(model, frames, q)
    for key in ("energy", "forces"):
        assert torch.equal(adapted[key], before[key])  # exactly: B = 0
    with torch.no_grad():
        for b in lora.b:
            b.normal_()
    adapted = predictions(model, frames, q)
    assert (adapted["energy"] - before["energy"]).abs().max() > 1e-3
    names = [n for n, _ in model.named_parameters()]
    lora.merge()
    assert [n for n, _ in model.named_parameters()] == names  # the plain architecture
    merged = predictions(model, frames, q)
    for key in ("energy", "forces"):
        torch.testing.assert_close(merged[key], adapted[key], rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="^the adapters were already merged or removed$"):
        lora.merge()


def test_zero_initialised_lora_on_pet_is_exact_and_merge_matches(pet_checkpoint):
    from metatrain.utils.io import load_model

    from symmd._lora import LowRankAdapters
    from symmd.finetune import _select

    model = load_model(pet_checkpoint)
    frames, q = clusters(2, labelled=False), draws(2)
    before = predictions(model, frames, q)
    chosen, adapt = _select(model, "lora")
    assert chosen and all(("heads." in n or "last_layers." in n) for n in chosen)
    assert adapt and not any(("heads." in n or "last_layers." in n) for n in adapt)
    assert "backend.gnn_layers.0.trans.layers.0.attention.input_linear" in adapt
    lora = LowRankAdapters(model, adapt, rank=2, alpha=2.0)
    adapted = predictions(model, frames, q)
    for key in ("energy", "forces"):
        assert torch.equal(adapted[key], before[key])
    with torch.no_grad():
        for b in lora.b:
            b.normal_(std=0.1)
    adapted = predictions(model, frames, q)
    assert (adapted["energy"] - before["energy"]).abs().max() > 1e-4
    lora.merge()
    merged = predictions(model, frames, q)
    for key in ("energy", "forces"):  # float32 model: round-off of the merged product
        torch.testing.assert_close(merged[key], adapted[key], rtol=1e-5, atol=1e-5)


def broken_labels(n=4):
    """Clusters labelled by a PairToy that itself breaks O(3): there the
    symmetry and the accuracy pull ``breaking`` in opposite directions."""
    frames = clusters(n, labelled=False)
    reference = load(PairToy(sym=1.0, breaking=0.3))
    for atoms in frames:
        out = evaluate_rotated(reference, atoms, torch.eye(3))
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(out["energy"][0]), forces=out["forces"][0].numpy()
        )
    return frames


def test_budget_selects_the_lowest_a_within_the_budget(tmp_path):
    frames = broken_labels(5)
    budget = 0.5
    chosen = symmd.finetune(
        PairToy(sym=0.98, breaking=0.3),
        frames[:3],
        valid=frames[3:],
        gamma=[0.0, 10.0, 100.0, 1000.0],
        trainable="all",
        augment=False,  # the labels themselves break O(3): fit them as they are
        epochs=10,
        lr=0.1,
        batch_size=3,
        degree=2,
        max_mae_increase=budget,
        out=tmp_path,
        progress=False,
    )
    scan = json.loads((tmp_path / "scan.json").read_text())
    assert scan == chosen.scan
    rows = scan["rows"]
    assert [r["run"] for r in rows] == ["raw", "gamma=0", "gamma=10", "gamma=100", "gamma=1000"]
    reference = rows[0]["forces_mae"]
    assert reference == scan["reference_forces_mae"] > 0
    inside = [r for r in rows if r["forces_mae"] <= (1 + budget) * reference]
    assert [r["within_budget"] for r in rows] == [r in inside for r in rows]
    assert any(not r["within_budget"] for r in rows)  # the budget binds
    best = min(inside, key=lambda r: r["forces_A_rms"])
    assert [r["selected"] for r in rows] == [r is best for r in rows]
    # the returned model is the selected one, measured on the validation set
    assert chosen.metrics["evaluated_on"] == "valid"
    assert chosen.metrics["metrics"]["forces"]["mae"] <= (1 + budget) * reference
    assert chosen.metrics["metrics"]["forces"]["A_rms"] == best["forces_A_rms"]
    assert best["forces_A_rms"] < rows[0]["forces_A_rms"]
    # and the budget is what stops it: some run over the budget is more symmetric
    assert min(r["forces_A_rms"] for r in rows) < best["forces_A_rms"]
    assert (tmp_path / "raw" / "result.json").exists()
    assert "selected" in format_scan(scan)


def test_all_moves_every_parameter_lora_only_adapters_and_readout():
    tuned = symmd.finetune(
        MLPToy(), clusters(4), gamma=1.0, trainable="all", epochs=2, lr=1e-2, batch_size=2,
        degree=2, progress=False,
    )  # fmt: skip
    original = dict(MLPToy().named_parameters())
    for name, value in tuned.model.named_parameters():
        assert not torch.equal(value, original[name]), name
    lora = symmd.finetune(
        MLPToy(), clusters(4), gamma=1.0, trainable="lora", rank=1, epochs=2, lr=1e-2,
        batch_size=2, degree=2, progress=False,
    )  # fmt: skip
    assert lora.metrics["lora"] == {"rank": 1, "alpha": 1.0, "layers": ["inner", "outer"]}
    assert lora.metrics["trainable"] == []  # MLPToy has no readout by PET's names
    assert lora.metrics["n_trained"] == (4 + 8) + (8 + 1)  # A [1, in] and B [out, 1]
    for name, value in lora.model.named_parameters():
        changed = not torch.equal(value, original[name])
        assert changed == name.endswith("weight"), name  # merged into the weights only
        if name.endswith("weight"):  # a rank-1 update
            delta = (value - original[name]).detach()
            assert torch.linalg.matrix_rank(delta) == 1


def test_mode_and_budget_errors():
    frames = clusters(2)
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), frames, gamma=1.0, trainable="lroa")
    assert str(error.value) == (
        "trainable='lroa' is neither a mode ('readout', 'lora', 'all') nor a parameter "
        "name; glob patterns are also accepted, e.g. ['*heads.*']"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), frames, gamma=1.0, trainable="readout")
    assert str(error.value) == (
        "trainable='readout' found no readout parameter (patterns ['*heads.*', "
        "'*last_layers.*']); give glob patterns of the model's parameter names instead, "
        "which are ['sym', 'breaking', 'other']"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), frames, gamma=1.0, trainable="lora")
    assert str(error.value) == (
        "trainable='lora' found no torch.nn.Linear layer outside the readout to adapt; "
        "the model's parameters are ['sym', 'breaking', 'other']"
    )
    with pytest.raises(TypeError) as error:
        symmd.finetune(PairToy(), frames, gamma=1.0, trainable=3)
    assert str(error.value) == (
        "trainable must be one of ('readout', 'lora', 'all') or a list of glob patterns, got 3"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(MLPToy(), frames, gamma=1.0, trainable="lora", rank=0)
    assert str(error.value) == "rank must be an int >= 1, got 0"
    with pytest.raises(ValueError) as error:
        symmd.finetune(MLPToy(), frames, gamma=1.0, trainable="lora", alpha=-1.0)
    assert str(error.value) == ("alpha must be a positive number (or None: alpha = rank), got -1.0")
    with pytest.raises(ValueError) as error:
        symmd.finetune(PairToy(), frames, gamma=[0.0, 1.0], max_mae_increase=-0.1)
    assert str(error.value) == (
        "max_mae_increase must be a number >= 0 (a fraction: 0.10 allows 10 % more force "
        "MAE than the un-fine-tuned model), got -0.1"
    )
    with pytest.raises(TypeError) as error:
        symmd.finetune(PairToy(), frames)
    assert str(error.value) == (
        "finetune() needs gamma (or max_mae_increase, which scans a default grid)"
    )
    with pytest.raises(ValueError) as error:
        symmd.finetune(
            PairToy(), frames, valid=clusters(2, labelled=False), gamma=1.0, max_mae_increase=0.1
        )
    assert str(error.value) == (
        "max_mae_increase needs force labels on the validation set to measure the force MAE"
    )


def test_augmented_loss_with_own_orientations_is_that_of_composed_draws():
    """Turning structure b by R_b first and drawing g_j is drawing g_j R_b:
    the same L_mu and L_sigma, with the labels turned alike."""
    from symmd._finetune_loss import losses, outputs_of
    from symmd.o3 import Quadrature

    model = load(PairToy(breaking=0.3))
    frames = clusters(2)
    _, labels = read_labels(frames)
    outputs = outputs_of(model, labels, frames)
    scales = {"energy": 0.3, "forces": 2.0}
    q, orient = draws(3, seed=1), draws(2, seed=2).rotations.numpy()
    both = losses(model, frames, labels, [1, 0], outputs, scales, q, True, True, orient)
    total = torch.zeros(2, dtype=torch.float64)
    for b, i in enumerate([1, 0]):  # each structure alone, with draws g_j R_b
        composed = q.rotations @ torch.as_tensor(orient[b])
        qb = Quadrature(composed, q.weights, None, "composed")
        alone = losses(model, frames, labels, [i], outputs, scales, qb, True, True)
        total += torch.stack([x.detach() for x in alone])
    # L_sigma: mean over structures (energy) / atoms (forces, equal counts here)
    torch.testing.assert_close(
        torch.stack([x.detach() for x in both]), total / 2, rtol=1e-10, atol=0
    )


@pytest.mark.slow
def test_lora_checkpoint_is_a_plain_metatrain_checkpoint(tmp_path, pet_checkpoint):
    """The adapters are merged: the saved checkpoint has the original keys and
    shapes, metatrain's own ``mtt export`` (a process without symmd) reads it,
    and every saved form predicts what the fine-tuned model does."""
    import subprocess
    import sys

    frames = clusters(3)
    result = symmd.finetune(
        pet_checkpoint, frames, gamma=10.0, trainable="lora", rank=2, epochs=2, lr=1e-2,
        batch_size=2, degree=2, out=tmp_path, progress=False,
    )  # fmt: skip
    original = torch.load(pet_checkpoint, weights_only=False)["model_state_dict"]
    saved = torch.load(result.paths["checkpoint"], weights_only=False)["model_state_dict"]
    assert {k: tuple(v.shape) for k, v in saved.items() if torch.is_tensor(v)} == {
        k: tuple(v.shape) for k, v in original.items() if torch.is_tensor(v)
    }
    changed = [
        k for k, v in original.items() if torch.is_tensor(v) and not torch.equal(v, saved[k])
    ]
    assert "backend.gnn_layers.0.trans.layers.0.attention.input_linear.weight" in changed
    assert not any(k.endswith(".bias") and "heads" not in k and "last_layers" not in k
                   for k in changed)  # fmt: skip
    exported = tmp_path / "by_mtt.pt"
    code = (
        "import sys; from metatrain.__main__ import main; "
        f"sys.argv = ['mtt', 'export', {str(result.paths['checkpoint'])!r}, '-o', {str(exported)!r}]; "
        "main()"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    probe = clusters(1, labelled=False)[0]
    reference = evaluate_rotated(load(result.model), probe, torch.eye(3))
    for path in (result.paths["checkpoint"], result.paths["model"], exported):
        again = evaluate_rotated(load(str(path)), probe, torch.eye(3))
        for key in ("energy", "forces"):
            torch.testing.assert_close(again[key], reference[key], rtol=1e-6, atol=1e-6)
