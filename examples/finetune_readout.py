"""Fine-tune the readout of a PET trained without rotational augmentation with
an equivariance penalty, then run monitored MD with the raw and the tuned model.

The checkpoint ``examples/data/pet-noaug-plate.ckpt`` is the tiny PET of
``examples/train_model/options_epochs.yaml`` after 40 epochs on 300 flat EMT
Cu/Al plates (all in the lab xy plane) with metatrain's O(3) augmentation
switched off (``train_no_augmentation.py``; the ``noaug`` run of
``train_epochs.sh``). Here only its heads and last layers (5314 of its
parameters) are retrained, for each gamma in a sweep, on freshly generated EMT
plates with L = L_mu + gamma L_sigma; the equivariance error A and the model
error are measured on held-out plates. Then a short Langevin MD on a held-out
plate with symmd's Monitor prints the relative force equivariance error
A_F / F of the raw model and of every tuned one.

    python examples/finetune_readout.py           # ~5-6 min on 2 cores
    python examples/finetune_readout.py -o DIR    # keep the models, JSON and figure

``DIR/tradeoff.png`` plots model error vs equivariance error, one marker per
gamma. ``--trainable lora`` or ``all`` trains more than the readout; the
measured trade-off of every mode on this model and on the shipped augmented
one is ``benchmarks/finetune_tradeoff.py`` (README, "Fine-tuning").
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

import symmd
from symmd import Monitor, SymmetryCalculator

HERE = pathlib.Path(__file__).resolve().parent
CHECKPOINT = HERE / "data" / "pet-noaug-plate.ckpt"
sys.path.insert(0, str(HERE / "train_model"))
from generate_data import make_plate  # noqa: E402 (EMT plates, seeded)

QUICK = bool(os.environ.get("SYMMD_EXAMPLE_QUICK"))
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("-o", "--output", "--out", help="folder for the tuned models, JSON and figure")
parser.add_argument(
    "--gamma", type=float, nargs="+", default=[0.0, 10.0] if QUICK else [0.0, 1e2, 1e3, 1e4]
)
parser.add_argument("--epochs", type=int, default=1 if QUICK else 8)
parser.add_argument("--trainable", default="readout", choices=["readout", "lora", "all"])
parser.add_argument("--n-train", type=int, default=8 if QUICK else 48)
parser.add_argument("--n-valid", type=int, default=3 if QUICK else 10)
parser.add_argument("--degree", type=int, default=2 if QUICK else 7)
parser.add_argument("--steps", type=int, default=int(os.environ.get("SYMMD_EXAMPLE_STEPS", 100)))
args = parser.parse_args()

start = time.perf_counter()
train = [make_plate(np.random.default_rng([1, i])) for i in range(args.n_train)]
valid = [make_plate(np.random.default_rng([2, i])) for i in range(args.n_valid)]
out = pathlib.Path(args.output or tempfile.mkdtemp(prefix="finetune_"))
common = dict(valid=valid, degree=args.degree, progress=False)
untouched = symmd.finetune(CHECKPOINT, train, gamma=0.0, epochs=0, **common)  # the raw model
results = symmd.finetune(
    CHECKPOINT,
    train,
    gamma=args.gamma,
    trainable=args.trainable,
    epochs=args.epochs,
    lr=1e-3,
    batch_size=8,
    rotations=2,
    seed=0,
    out=out,
    **common,
)

print(f"held-out plates: {len(valid)}; A: rms, quadrature of degree {args.degree}")
print("   gamma  E MAE meV/at  A_E meV/at  F MAE meV/A  A_F meV/A")
for result in [untouched, *results]:
    e, f = result.metrics["metrics"]["energy"], result.metrics["metrics"]["forces"]
    label = "raw" if result is untouched else f"{result.gamma:g}"
    print(
        f"{label:>8}  {1e3 * e['mae']:12.3f}  {1e3 * e['A_per_atom_rms']:10.4f}"
        f"  {1e3 * f['mae']:11.2f}  {1e3 * f['A_rms']:9.3f}"
    )


def md_rel_force_error(model) -> float:
    """Median A_F / F of a monitored Langevin run on a held-out plate (300 K, 1 fs)."""
    atoms = max(valid, key=len).copy()
    rng = np.random.default_rng(0)
    monitor = Monitor(every=5, rotations=4, seed=0, action="warn", timestep=1.0)
    atoms.calc = SymmetryCalculator(model, monitor=monitor)
    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta

        thermalize_momenta(atoms, 300, rng=rng)
    except ImportError:
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=rng)
    # friction 0.02 1/fs (ASE takes it in its own time unit)
    Langevin(
        atoms, 1 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False, rng=rng
    ).run(args.steps)
    return float(np.median([row["rel_forces"] for row in monitor.history]))


print(f"MD ({args.steps} steps, Langevin 300 K), median A_F/F from the Monitor:")
print(f"  raw noaug PET:    {md_rel_force_error(str(CHECKPOINT)):.3e}")
for result in results:
    print(f"  tuned, gamma={result.gamma:<6g} {md_rel_force_error(str(result.paths['model'])):.3e}")
print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
