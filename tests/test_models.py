import re

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from helpers import cu_cluster, cual_cell, random_rotations, rotated_copy
from toy_models import lab_frame_callable, toy_metatomic_model

from symmd import models, o3


def symmetric(stress):
    return (stress + stress.transpose(-1, -2)) / 2


def per_copy_reference(calc, atoms, rotations, stress=True):
    """Evaluate each rotated ase.Atoms separately through an ASE calculator
    (ASE stores the stress in Voigt form, so it comes back symmetrized)."""
    out = {"energy": [], "forces": [], "stress": []}
    for rot in rotations.numpy():
        copy = rotated_copy(atoms, rot)
        copy.calc = calc
        out["energy"].append(copy.get_potential_energy())
        out["forces"].append(copy.get_forces())
        if stress:
            out["stress"].append(copy.get_stress(voigt=False))
    return {k: torch.tensor(np.array(v)) for k, v in out.items() if v}


@pytest.fixture(scope="module")
def toy():
    return toy_metatomic_model()


def test_metatomic_batched_matches_per_copy_metatomic_calculator(toy):
    from metatomic_ase import MetatomicCalculator

    atoms = cual_cell()
    rot = random_rotations(6, seed=1)
    out = models.evaluate_rotated(models.load(toy), atoms, rot, ("energy", "forces", "stress"))
    ref = per_copy_reference(MetatomicCalculator(toy), atoms, rot)
    assert (
        out["energy"].shape == (6,)
        and out["forces"].shape == (6, 32, 3)
        and out["stress"].shape == (6, 3, 3)
    )
    out["stress"] = symmetric(out["stress"])
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-12, rtol=1e-12), key
    # the toy is not invariant, so this comparison is not trivially satisfied
    assert float(out["energy"].std()) > 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pet-emt-cual", "pet-emt-cu-cluster"])
def test_shipped_pet_batched_matches_per_copy_metatomic_calculator(name):
    from metatomic_ase import MetatomicCalculator

    path = models.shipped_model(name)
    atoms = cual_cell() if name == "pet-emt-cual" else cu_cluster()
    periodic = bool(atoms.pbc.all())
    rot = random_rotations(4, seed=2)
    props = ("energy", "forces", "stress") if periodic else ("energy", "forces")
    adapter = models.load(path)
    assert adapter.dtype == torch.float32
    out = models.evaluate_rotated(adapter, atoms, rot, props)
    ref = per_copy_reference(MetatomicCalculator(path), atoms, rot, stress=periodic)
    if periodic:
        out["stress"] = symmetric(out["stress"])
    scale = {k: float(ref[k].abs().max()) for k in ref}
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=2e-5 * max(scale[key], 1.0), rtol=1e-5), key


def test_callable_batched_matches_plain_calls_and_finite_differences():
    atoms = cu_cluster(8)
    rot = random_rotations(5, seed=3)
    out = models.evaluate_rotated(models.load(lab_frame_callable), atoms, rot, ("energy", "forces"))
    for k, r in enumerate(rot):
        pos = torch.tensor(atoms.positions @ r.numpy().T, requires_grad=True)
        energy = lab_frame_callable(
            pos,
            torch.tensor(atoms.numbers),
            torch.zeros(1, 3, 3, dtype=torch.float64),
            torch.zeros(1, 3, dtype=torch.bool),
            torch.zeros(8, dtype=torch.long),
        )["energy"]
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        assert abs(float(energy[0] - out["energy"][k])) < 1e-12
        assert torch.allclose(out["forces"][k], -grad, atol=1e-12)
    # forces against central finite differences of the energy (unrotated copy)
    h = 1e-5
    pos = atoms.positions.copy()
    ref = models.evaluate_rotated(
        models.load(lab_frame_callable), atoms, torch.eye(3), ("forces",)
    )["forces"][0]
    for i, a in [(0, 0), (3, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, a] += h
        minus.positions[i, a] -= h
        e = models.evaluate_rotated(
            models.load(lab_frame_callable), [plus, minus], torch.eye(3), ("energy",)
        )["energy"][0]
        assert abs(float(-(e[0] - e[1]) / (2 * h) - ref[i, a])) < 1e-7
    assert np.array_equal(pos, atoms.positions)


def test_stress_matches_finite_differences_of_strain(toy):
    atoms = cual_cell((1, 1, 2))
    stress = models.evaluate_rotated(models.load(toy), atoms, torch.eye(3), ("stress",))["stress"][
        0
    ]
    h = 1e-6
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        energies = []
        for sign in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sign * h
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ eps, scale_atoms=False)
            strained.positions = atoms.positions @ eps
            energies.append(
                float(
                    models.evaluate_rotated(models.load(toy), strained, torch.eye(3), ("energy",))[
                        "energy"
                    ][0]
                )
            )
        fd = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
        assert abs(fd - float(stress[a, b])) < 1e-8


@pytest.mark.parametrize("batch_size", [1, 7, None])
def test_results_do_not_depend_on_batch_size(toy, batch_size):
    atoms = [cual_cell(seed=1), cual_cell((1, 1, 2), seed=2)]
    q = o3.quadrature(2)
    out = models.evaluate_rotated(
        models.load(toy),
        atoms,
        q,
        ("energy", "forces", "stress", "energies"),
        batch_size=batch_size,
    )
    full = models.evaluate_rotated(
        models.load(toy), atoms, q, ("energy", "forces", "stress", "energies")
    )
    assert (
        out["energy"].shape == (24, 2)
        and out["forces"].shape == (24, 40, 3)
        and out["stress"].shape == (24, 2, 3, 3)
    )
    for key in full:
        assert torch.allclose(out[key], full[key], atol=1e-12, rtol=0), key
    assert torch.allclose(out["energies"][:, :32].sum(1), out["energy"][:, 0], atol=1e-12)


def test_several_structures_match_separate_evaluations(toy):
    first, second = cual_cell(seed=3), cual_cell((1, 2, 1), seed=4)
    rot = random_rotations(3, seed=4)
    both = models.evaluate_rotated(models.load(toy), [first, second], rot, ("energy", "forces"))
    alone = models.evaluate_rotated(models.load(toy), second, rot, ("energy", "forces"))
    assert torch.allclose(both["energy"][:, 1], alone["energy"], atol=1e-12)
    assert torch.allclose(both["forces"][:, 32:], alone["forces"], atol=1e-12)


def test_ase_calculator_fallback_matches_emt_and_is_equivariant():
    atoms = cual_cell((1, 1, 2), rattle=0.05)
    q = o3.quadrature(1)
    out = models.evaluate_rotated(models.load(EMT()), atoms, q, ("energy", "forces", "stress"))
    ref = per_copy_reference(EMT(), atoms, q.rotations)
    for key in ref:
        assert torch.allclose(out[key], ref[key], atol=1e-10)
    from symmd import metrics

    assert float(metrics.equivariance_error(out["forces"], q, "vector").max()) < 1e-10


def test_float32_model_keeps_float32_inside_and_returns_float64():
    calls = []

    def f(positions, types, cell, pbc, system_index):
        calls.append(positions.dtype)
        return lab_frame_callable(positions, types, cell, pbc, system_index)

    out = models.evaluate_rotated(
        models.load(f, dtype=torch.float32),
        cu_cluster(6),
        random_rotations(3),
        ("energy", "forces"),
    )
    assert calls == [torch.float32] and out["forces"].dtype == torch.float64


def test_one_model_call_per_chunk(toy):
    calls = []
    adapter = models.load(toy)
    original = adapter.__call__

    class Counting(models.MetatomicAdapter):
        def __call__(self, batch, properties):
            calls.append(len(batch.n_atoms))
            return original(batch, properties)

    counting = Counting.__new__(Counting)
    counting.__dict__.update(adapter.__dict__)
    out = models.evaluate_rotated(
        counting, cual_cell(), o3.quadrature(3), ("energy", "forces"), batch_size=20
    )
    # 48 copies, at most 20 per call: three calls of equal shape, as planned
    assert calls == [16, 16, 16] == out.plan
    assert models.chunk_plan(48, 32, torch.device("cpu"), 20) == [16, 16, 16]
    assert models.chunk_plan(50, 32, torch.device("cpu"), 20) == [17, 17, 16]


@pytest.mark.parametrize("n_copies", [1, 47, 48, 120, 416])
@pytest.mark.parametrize("atoms_pairs", [(8, 0), (32, 900), (108, 3000), (256, 7100), (2000, 0)])
@pytest.mark.parametrize("batch_size", [None, 1, 20])
def test_chunk_plan_spreads_copies_evenly_within_the_bounds(n_copies, atoms_pairs, batch_size):
    from symmd.models import CPU_ATOMS_PER_CALL, CPU_PAIRS_PER_CALL

    n_atoms, n_pairs = atoms_pairs
    plan = models.chunk_plan(n_copies, n_atoms, torch.device("cpu"), batch_size, n_pairs)
    if batch_size is None:
        bound = CPU_ATOMS_PER_CALL // n_atoms
        if n_pairs:
            bound = min(bound, CPU_PAIRS_PER_CALL // n_pairs)
        bound = max(1, bound)
    else:
        bound = batch_size
    assert sum(plan) == n_copies and max(plan) - min(plan) <= 1 and max(plan) <= bound
    assert len(plan) == -(-n_copies // bound)  # the fewest calls within the bound
    # at least one copy per call, however large the structure
    assert min(plan) >= 1
    # an accelerator takes every copy at once unless batch_size bounds it
    gpu = models.chunk_plan(n_copies, n_atoms, torch.device("cuda"), batch_size, n_pairs)
    assert gpu == ([n_copies] if batch_size is None else plan)


def test_default_cpu_chunks_follow_the_pair_count_of_the_structure(toy):
    calls = []
    adapter = models.load(toy)
    original = adapter.__call__

    class Counting(models.MetatomicAdapter):
        def __call__(self, batch, properties):
            calls.append((len(batch.n_atoms), sum(len(p[0]) for p in batch.pairs.values())))
            return original(batch, properties)

    counting = Counting.__new__(Counting)
    counting.__dict__.update(adapter.__dict__)
    # 32 atoms: 256 // 32 = 8 copies per call by atoms; squeezed to 60 % of its
    # size the cell has 4.6x the pairs, so that the pair bound decides
    dense = cual_cell()
    dense.set_cell(dense.cell.array * 0.6, scale_atoms=True)
    for atoms, expected in ((cual_cell(), [8] * 6), (dense, [5] * 8 + [4] * 2)):
        calls.clear()
        out = models.evaluate_rotated(counting, atoms, o3.quadrature(3), ("energy", "forces"))
        pairs = sum(int(p.counts.sum()) for p in out.pairs.values())
        assert [c for c, _ in calls] == out.plan == expected
        assert out.plan == models.chunk_plan(48, len(atoms), torch.device("cpu"), None, pairs)
        assert all(n_pairs == copies * pairs for copies, n_pairs in calls)


def test_evaluate_rotated_needs_an_adapter(toy):
    with pytest.raises(TypeError) as info:
        models.evaluate_rotated(toy, cual_cell(), torch.eye(3))
    assert str(info.value) == (
        "model must be an adapter, got AtomisticModel; wrap it first with symmd.models.load(model)"
    )


def test_bad_input_raises_clear_errors(toy, tmp_path):
    atoms = cual_cell()
    gold = atoms.copy()
    gold.numbers[0] = 79
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown element for this model: atomic number 79 (Au); the model knows [13, 29]"
        ),
    ):
        models.evaluate_rotated(models.load(toy), gold, torch.eye(3))
    nan = atoms.copy()
    nan.positions[[2, 5], 1] = np.nan
    with pytest.raises(
        ValueError,
        match=re.escape(
            "structure 0 has non-finite (NaN or inf) positions for atoms [2, 5]; check the integrator or the input file"
        ),
    ):
        models.evaluate_rotated(models.load(toy), nan, torch.eye(3))
    with pytest.raises(ValueError, match=re.escape("structure 1 is empty: it has no atoms")):
        models.evaluate_rotated(models.load(toy), [atoms, atoms[:0]], torch.eye(3))
    with pytest.raises(
        PropertyNotImplementedError,
        match=re.escape(
            "stress is only defined for fully periodic structures; structures [0] are not periodic in all three directions"
        ),
    ):
        models.evaluate_rotated(models.load(toy), cu_cluster(), torch.eye(3), ("stress",))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "non_conservative=True but the model has no 'non_conservative_force(s)' output; its outputs are ['energy']; use non_conservative=False"
        ),
    ):
        models.load(toy, non_conservative=True)
    with pytest.raises(
        FileNotFoundError, match=re.escape("model file 'missing.pt' does not exist")
    ):
        models.load("missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(repr(str(junk)))} is not an exported metatomic model \(.*\); export it with metatomic.torch.AtomisticModel.save or `mtt export`, or pass a metatrain checkpoint as a .ckpt file$",
    ):
        models.load(junk)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the model returned no ['energies'] output (it returned ['energy']); return per-atom 'energies' to use them"
        ),
    ):
        models.evaluate_rotated(
            models.load(lab_frame_callable), cu_cluster(), torch.eye(3), ("energies",)
        )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the model has no output ['dipole']; choose among ['energy', 'energies', 'forces', 'stress']"
        ),
    ):
        models.evaluate_rotated(models.load(toy), atoms, torch.eye(3), ("dipole",))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "model must be a path to a metatomic model or metatrain checkpoint, an AtomisticModel, an ASE calculator or a torch callable, got int"
        ),
    ):
        models.load(3)
    with pytest.raises(
        ValueError, match=re.escape("batch_size must be a positive int or None, got 0")
    ):
        models.evaluate_rotated(models.load(toy), atoms, torch.eye(3), batch_size=0)


def test_declared_extra_outputs_come_back_per_copy_with_their_kind():
    from toy_models import toy_model_with_extras

    model = models.load(toy_model_with_extras())
    # metatomic lists both spellings of renamed outputs; symmd keeps the current one
    assert model.declared_outputs() == ["non_conservative_force", "feature", "mtt::dipole"]
    frames = [cu_cluster(4), cu_cluster(6, seed=2)]
    rot = random_rotations(3, seed=4)
    out = models.evaluate_rotated(
        models.load(model),
        frames,
        rot,
        ("energy", "feature", "mtt::dipole", "non_conservative_force"),
    )
    assert isinstance(out, models.Responses)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "energy": (3, 2),
        "feature": (3, 10, 2),
        "mtt::dipole": (3, 2, 1, 3),
        "non_conservative_force": (3, 10, 1, 3),
    }
    assert out.kinds == {
        "energy": "scalar",
        "feature": "scalar",
        "mtt::dipole": "vector",
        "non_conservative_force": "vector",
    }
    assert out.per_atom == {
        "energy": False,
        "feature": True,
        "mtt::dipole": False,
        "non_conservative_force": True,
    }
    # the per-system dipole of copy k is sum_i q_i r_i R_k^T
    q = torch.tensor([0.1] * 4, dtype=torch.float64)
    dipole = (q[:, None] * torch.from_numpy(frames[0].positions)).sum(0)
    assert torch.allclose(
        out["mtt::dipole"][:, 0, 0], torch.einsum("j,kij->ki", dipole, rot), atol=1e-12
    )
    # single structure: per-system rows dropped, like the energy
    single = models.evaluate_rotated(models.load(model), frames[0], rot, ("mtt::dipole",))
    assert single["mtt::dipole"].shape == (3, 1, 3)


def test_callable_extra_outputs_are_validated():
    def fn(positions, types, cell, pbc, system_index):
        energy = torch.zeros(cell.shape[0], dtype=positions.dtype).index_add(
            0, system_index, positions.sum(1)
        )
        return {"energy": energy, "moment": positions[:2]}

    fn.extra_outputs = {"moment": "vector"}
    adapter = models.load(fn)
    assert adapter.declared_outputs() == ["moment"]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the output 'moment' of kind vector has shape (2, 3); expected [5 atoms or 1 structures, (P,), 3]"
        ),
    ):
        models.evaluate_rotated(adapter, cu_cluster(5), torch.eye(3), ("moment",))
    fn.extra_outputs = {"moment": "tensor"}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "extra_outputs kinds must be among ['scalar', 'vector', 'rank2'], got {'moment': 'tensor'}"
        ),
    ):
        models.load(fn)


def test_metatrain_checkpoints_and_eager_models_load_eagerly(pet_checkpoint, tmp_path):
    from helpers import tiny_pet

    adapter = models.load(pet_checkpoint)
    assert isinstance(adapter, models.MetatomicAdapter) and adapter.dtype == torch.float32
    assert type(adapter.hook_root()).__name__ == "PET"
    eager = models.load(tiny_pet())  # a metatrain model object, exported on the fly
    atoms = cual_cell((1, 1, 1))
    rot = random_rotations(2, seed=1)
    a = models.evaluate_rotated(adapter, atoms, rot, ("energy", "forces"))
    b = models.evaluate_rotated(models.load(eager), atoms, rot, ("energy", "forces"))
    assert torch.allclose(a["forces"], b["forces"], atol=1e-6)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(
        ValueError, match=rf"^{re.escape(repr(str(junk)))} is not a metatrain checkpoint \("
    ):
        models.load(junk)


@pytest.mark.slow
def test_shipped_checkpoint_reproduces_the_shipped_model():
    """examples/data/pet-emt-cual.ckpt holds the weights of the shipped
    pet-emt-cual.pt (examples/train_model/shipped_checkpoint.py): eager and
    exported agree to float32 round-off."""
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "data" / "pet-emt-cual.ckpt"
    atoms = cual_cell(rattle=0.1, seed=3)
    eye = torch.eye(3, dtype=torch.float64)
    shipped = models.evaluate_rotated(
        models.load(models.shipped_model()), atoms, eye, ["energy", "forces"]
    )
    eager = models.evaluate_rotated(models.load(str(path)), atoms, eye, ["energy", "forces"])
    assert abs(float(shipped["energy"][0] - eager["energy"][0])) < 1e-5
    assert float((shipped["forces"] - eager["forces"]).abs().max()) < 1e-5
    # a different model would differ far more than that: the test can fail
    assert float(shipped["forces"].abs().max()) > 0.1
