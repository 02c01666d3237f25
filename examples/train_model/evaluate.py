"""Evaluate the shipped PET models against EMT on a held-out set.

The held-out data is produced by ``generate_data.py`` with a different seed
(``train.sh`` uses ``--seed 12345 --prefix test_``).  For each model this script
prints

* energy MAE (meV/atom), force MAE / RMSE (meV/A), stress MAE (meV/A^3, periodic
  model only), with EMT as the reference;
* a rough equivariance error: for a few structures, the forces are computed for
  ``--n-rotations`` random rigid rotations (positions ``r @ R.T``, cell
  ``cell @ R.T``), rotated back (``F @ R``) and the RMS spread across the rotations
  is reported relative to the RMS force. The same is done for the energy (spread
  in meV/atom) and, for periodic systems, the stress (``R.T @ S @ R``).

Usage::

    python evaluate.py --data-dir /tmp/train_run --model-dir ../../symmd/data
"""

import argparse
import os
import warnings

import metatomic.torch as mta
import numpy as np
from ase.calculators.emt import EMT
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress
from scipy.spatial.transform import Rotation

try:
    from metatomic_ase import MetatomicCalculator
except ImportError:  # older metatomic versions
    from metatomic.torch.ase_calculator import MetatomicCalculator

# metatomic_ase always computes the stress together with the forces; for
# non-periodic systems this divides by a zero cell volume (the stress is then
# inf/nan and unused here), which triggers a harmless numpy warning.
warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)


MODELS = [
    # file name, test file, use stress
    ("pet-emt-cual.pt", "test_periodic.xyz", True),
    ("pet-emt-cu-cluster.pt", "test_cluster.xyz", False),
]


def describe(path):
    model = mta.load_atomistic_model(path)
    caps = model.capabilities()
    return {
        "size": os.path.getsize(path),
        "cutoff": caps.interaction_range,
        "types": list(caps.atomic_types),
        "dtype": caps.dtype,
        "outputs": list(caps.outputs.keys()),
        "name": model.metadata().name,
    }


def predict(atoms, calc, stress):
    atoms = atoms.copy()
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress(voigt=False) if stress else None
    return e, f, s


def accuracy(frames, calc, stress):
    de, df, ds = [], [], []
    for atoms in frames:
        ref = atoms.copy()
        ref.calc = EMT()
        e_ref, f_ref = ref.get_potential_energy(), ref.get_forces()
        e, f, s = predict(atoms, calc, stress)
        de.append((e - e_ref) / len(atoms))
        df.append((f - f_ref).ravel())
        if stress:
            ds.append((s - voigt_6_to_full_3x3_stress(ref.get_stress())).ravel())
    de, df = np.array(de), np.concatenate(df)
    out = {
        "E MAE (meV/atom)": 1e3 * np.mean(np.abs(de)),
        "F MAE (meV/A)": 1e3 * np.mean(np.abs(df)),
        "F RMSE (meV/A)": 1e3 * np.sqrt(np.mean(df**2)),
    }
    if stress:
        out["S MAE (meV/A^3)"] = 1e3 * np.mean(np.abs(np.concatenate(ds)))
    return out


def equivariance(atoms, calc, stress, n_rot, seed):
    rotations = Rotation.random(n_rot, random_state=seed).as_matrix()
    energies, forces, stresses = [], [], []
    for R in rotations:
        rot = atoms.copy()
        rot.positions = atoms.positions @ R.T
        if stress:
            rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
        e, f, s = predict(rot, calc, stress)
        energies.append(e / len(atoms))
        forces.append(f @ R)  # back to the original frame
        if stress:
            stresses.append(R.T @ s @ R)
    forces = np.array(forces)
    f_mean = forces.mean(axis=0)
    out = {
        "natoms": len(atoms),
        "E spread (meV/atom)": 1e3 * np.std(energies),
        "F spread (meV/A)": 1e3 * np.sqrt(np.mean((forces - f_mean) ** 2)),
        "F rms (meV/A)": 1e3 * np.sqrt(np.mean(f_mean**2)),
    }
    out["F rel. spread"] = out["F spread (meV/A)"] / out["F rms (meV/A)"]
    if stress:
        stresses = np.array(stresses)
        out["S spread (meV/A^3)"] = 1e3 * np.sqrt(np.mean((stresses - stresses.mean(axis=0)) ** 2))
    return out


def table(rows, first):
    keys = list(dict.fromkeys(k for _, row in rows for k in row))
    header = f"| {first} | " + " | ".join(keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 1)]
    for name, row in rows:
        values = [row.get(k, "n/a") for k in keys]
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/tmp/train_run")
    parser.add_argument("--model-dir", default=os.path.join(here, "..", "..", "symmd", "data"))
    parser.add_argument("--n-structures", type=int, default=3)
    parser.add_argument("--n-rotations", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    acc_rows, eq_rows = [], []
    for fname, test_file, stress in MODELS:
        path = os.path.join(args.model_dir, fname)
        info = describe(path)
        print(f"{fname}: {info}")
        calc = MetatomicCalculator(path)
        frames = read(os.path.join(args.data_dir, test_file), ":")
        acc = {"n_test": len(frames)}
        acc.update(accuracy(frames, calc, stress))
        acc_rows.append((fname, acc))
        for i, atoms in enumerate(frames[: args.n_structures]):
            eq = equivariance(atoms, calc, stress, args.n_rotations, args.seed + i)
            eq_rows.append((f"{fname} #{i} ({atoms.get_chemical_formula()})", eq))

    print("\nAccuracy against EMT (held-out set)\n")
    print(table(acc_rows, "model"))
    print(f"\nEquivariance error ({args.n_rotations} random rotations)\n")
    print(table([(n, r) for n, r in eq_rows if "cual" in n], "structure"))
    print()
    print(table([(n, r) for n, r in eq_rows if "cluster" in n], "structure"))


if __name__ == "__main__":
    main()
