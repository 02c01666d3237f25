"""Evaluate the shipped direct-force PET (``pet-emt-cual-direct.pt``) against EMT.

On the held-out set written by ``generate_data.py --seed 12345 --n-bulk ...
--n-nanocluster ... --prefix test_`` (``test_direct.xyz``), through symmd
itself (``SymmetryCalculator(model)`` for the conservative forces and stress,
autograd of the energy; ``SymmetryCalculator(model, non_conservative=True)``
for the direct heads), for the bulk cells, the clusters and both together:

* energy MAE and RMSE (meV/atom);
* force RMSE (meV/A, over Cartesian components) of the conservative forces and
  of the direct head, and their ratio (direct / conservative);
* stress RMSE (meV/A^3, over the 6 Voigt components; bulk only), both ways;
* the net force of the direct head, ``|sum_i F_i|`` per structure (eV/A; the
  conservative forces sum to zero up to round-off) and, for clusters, its net
  torque about the centre of mass ``|sum_i (r_i - r_com) x F_i|`` (eV);
* the equivariance error ``A_F`` (rms over atoms, eV/A; ``symmd.metrics``) of
  both force kinds over a degree-3 rule, on the first few structures of each
  kind;
* the cost per atom and rotated copy of one batched call
  (``symmd.models.evaluate_rotated``, 48 copies of the octahedral group with
  inversion, one thread): energy + direct forces (forward only) and energy +
  autograd forces, side by side with the periodic ``pet-emt-cual.pt`` in the
  same run (interleaved repeats, medians), on a 108-atom bulk cell and a
  55-atom icosahedral cluster.

Everything goes to a JSON file (``--json``, default
``examples/train_model/direct_metrics.json``) and a short table is printed.

Usage::

    python evaluate_direct.py --data-dir /tmp/direct_run
"""

import argparse
import json
import os
import pathlib
import statistics
import time

import numpy as np
import torch
from ase.calculators.emt import EMT
from ase.cluster import Icosahedron
from ase.io import read

from symmd import SymmetryCalculator, metrics, models, o3

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent.parent / "symmd" / "data"


def predict(frames, path):
    """Per frame: EMT labels and the model's energy, conservative and direct
    forces, and (periodic frames) both stresses, float64 numpy."""
    conservative = SymmetryCalculator(path)
    direct = SymmetryCalculator(path, non_conservative=True)
    rows = []
    for atoms in frames:
        periodic = bool(atoms.pbc.all())
        ref = atoms.copy()
        ref.calc = EMT()
        row = {
            "periodic": periodic,
            "n": len(atoms),
            "positions": atoms.positions.copy(),
            "masses": atoms.get_masses(),
            "e_ref": ref.get_potential_energy(),
            "f_ref": ref.get_forces(),
        }
        props = ["energy", "forces"] + (["stress"] if periodic else [])
        conservative.calculate(atoms.copy(), props)
        row["e"] = conservative.results["energy"]
        row["f_cons"] = conservative.results["forces"].copy()
        direct.calculate(atoms.copy(), props)
        row["e_direct"] = direct.results["energy"]
        row["f_direct"] = direct.results["forces"].copy()
        if periodic:
            row["s_ref"] = ref.get_stress()
            row["s_cons"] = conservative.results["stress"].copy()
            row["s_direct"] = direct.results["stress"].copy()
        rows.append(row)
    return rows


def _rmse(values):
    return float(np.sqrt(np.mean(np.square(np.concatenate([np.ravel(v) for v in values])))))


def summarize(rows):
    """The accuracy figures of a group of frames (see the module docstring)."""
    de = np.array([(r["e"] - r["e_ref"]) / r["n"] for r in rows])
    f_cons = _rmse([r["f_cons"] - r["f_ref"] for r in rows])
    f_direct = _rmse([r["f_direct"] - r["f_ref"] for r in rows])
    net = np.array([np.linalg.norm(r["f_direct"].sum(axis=0)) for r in rows])
    net_cons = np.array([np.linalg.norm(r["f_cons"].sum(axis=0)) for r in rows])
    out = {
        "n_structures": len(rows),
        "n_atoms": int(sum(r["n"] for r in rows)),
        "energy_mae_mev_per_atom": 1e3 * float(np.mean(np.abs(de))),
        "energy_rmse_mev_per_atom": 1e3 * float(np.sqrt(np.mean(de**2))),
        "force_rms_reference_mev_per_a": 1e3 * _rmse([r["f_ref"] for r in rows]),
        "force_rmse_conservative_mev_per_a": 1e3 * f_cons,
        "force_rmse_direct_mev_per_a": 1e3 * f_direct,
        "force_rmse_ratio_direct_over_conservative": f_direct / f_cons,
        "direct_net_force_mean_ev_per_a": float(net.mean()),
        "direct_net_force_max_ev_per_a": float(net.max()),
        "direct_net_force_per_atom_rms_mev_per_a": 1e3
        * float(
            np.sqrt(np.mean([(np.linalg.norm(r["f_direct"].mean(axis=0))) ** 2 for r in rows]))
        ),
        "conservative_net_force_max_ev_per_a": float(net_cons.max()),
        "energy_direct_minus_conservative_max_ev": float(
            max(abs(r["e_direct"] - r["e"]) for r in rows)
        ),
    }
    periodic = [r for r in rows if r["periodic"]]
    if periodic:
        s_cons = _rmse([r["s_cons"] - r["s_ref"] for r in periodic])
        s_direct = _rmse([r["s_direct"] - r["s_ref"] for r in periodic])
        out.update(
            stress_rms_reference_mev_per_a3=1e3 * _rmse([r["s_ref"] for r in periodic]),
            stress_rmse_conservative_mev_per_a3=1e3 * s_cons,
            stress_rmse_direct_mev_per_a3=1e3 * s_direct,
            stress_rmse_ratio_direct_over_conservative=s_direct / s_cons,
        )
    clusters = [r for r in rows if not r["periodic"]]
    if clusters:
        torques = []
        for r in clusters:
            com = r["masses"] @ r["positions"] / r["masses"].sum()
            torques.append(np.linalg.norm(np.cross(r["positions"] - com, r["f_direct"]).sum(0)))
        out.update(
            direct_net_torque_mean_ev=float(np.mean(torques)),
            direct_net_torque_max_ev=float(np.max(torques)),
        )
    return out


def equivariance(frames, path, n_frames):
    """Mean over the first ``n_frames`` frames of the rms-over-atoms A_F (eV/A)
    of both force kinds, degree-3 rule (48 rotations with inversion)."""
    q = o3.quadrature(3)
    out = {}
    for label, nc in (("conservative", False), ("direct", True)):
        adapter = models.load(path, non_conservative=nc)
        values = []
        for atoms in frames[:n_frames]:
            u = models.evaluate_rotated(adapter, atoms, q, properties=("forces",))["forces"]
            a = metrics.equivariance_error(u, q, "vector")
            values.append(float(torch.sqrt(torch.mean(a**2))))
        out[f"a_forces_rms_{label}_ev_per_a"] = float(np.mean(values))
    out["n_structures"] = min(n_frames, len(frames))
    out["quadrature"] = {"name": q.name, "size": len(q), "degree": q.degree}
    return out


def cost(path, reference, repeats):
    """Microseconds per atom and rotated copy (median of ``repeats`` interleaved
    timings after one warm-up call), one thread."""
    torch.set_num_threads(1)
    q = o3.point_group("O")  # 24 rotations x inversion = 48 copies
    structures = {
        "bulk_108": models.cual_cell((3, 3, 3), seed=1, rattle=0.05),
        "cluster_55": Icosahedron("Cu", 3, latticeconstant=3.7),
    }
    structures["cluster_55"].numbers[::3] = 13
    cases = {
        "reference_autograd": (models.load(reference), ("energy", "forces")),
        "autograd": (models.load(path), ("energy", "forces")),
        "direct_forward": (models.load(path, non_conservative=True), ("energy", "forces")),
    }
    out = {"copies": len(q), "threads": 1, "repeats": repeats}
    for sname, atoms in structures.items():
        times = {name: [] for name in cases}
        for rep in range(repeats + 1):
            for name, (adapter, props) in cases.items():
                start = time.perf_counter()
                models.evaluate_rotated(adapter, atoms, q, properties=props)
                if rep:  # the first round warms up TorchScript
                    times[name].append(time.perf_counter() - start)
        per = {n: 1e6 * statistics.median(t) / (len(q) * len(atoms)) for n, t in times.items()}
        out[sname] = {
            "natoms": len(atoms),
            **{f"{n}_us_per_atom_copy": v for n, v in per.items()},
            "autograd_over_direct": per["autograd"] / per["direct_forward"],
            "reference_over_direct": per["reference_autograd"] / per["direct_forward"],
            "reference_over_autograd": per["reference_autograd"] / per["autograd"],
        }
    return out


def describe(path):
    adapter = models.load(path, non_conservative=True)
    model = adapter.model if hasattr(adapter, "model") else None
    info = {"file": os.path.basename(path), "size_bytes": os.path.getsize(path)}
    if model is not None:
        caps = model.capabilities()
        info.update(
            dtype=caps.dtype,
            interaction_range=caps.interaction_range,
            atomic_types=list(caps.atomic_types),
            outputs=sorted(n for n in caps.outputs if not n.startswith("mtt::")),
        )
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="/tmp/direct_run")
    parser.add_argument("--model", default=str(DATA / "pet-emt-cual-direct.pt"))
    parser.add_argument("--reference", default=str(DATA / "pet-emt-cual.pt"))
    parser.add_argument("--json", default=str(HERE / "direct_metrics.json"))
    parser.add_argument("--equivariance-frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-cost", action="store_true", help="accuracy only")
    args = parser.parse_args()

    frames = read(os.path.join(args.data_dir, "test_direct.xyz"), ":")
    rows = predict(frames, args.model)
    bulk = [r for r in rows if r["periodic"]]
    clusters = [r for r in rows if not r["periodic"]]
    result = {
        "model": describe(args.model),
        "test_set": "test_direct.xyz (generate_data.py --seed 12345)",
        "accuracy": {
            "bulk": summarize(bulk),
            "cluster": summarize(clusters),
            "all": summarize(rows),
        },
        "equivariance": {
            "bulk": equivariance(
                [f for f in frames if f.pbc.all()], args.model, args.equivariance_frames
            ),
            "cluster": equivariance(
                [f for f in frames if not f.pbc.any()], args.model, args.equivariance_frames
            ),
        },
    }
    if not args.skip_cost:
        result["cost"] = cost(args.model, args.reference, args.repeats)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")

    print(json.dumps(result["model"]))
    keys = [
        "energy_mae_mev_per_atom",
        "force_rmse_conservative_mev_per_a",
        "force_rmse_direct_mev_per_a",
        "force_rmse_ratio_direct_over_conservative",
        "stress_rmse_conservative_mev_per_a3",
        "stress_rmse_direct_mev_per_a3",
        "direct_net_force_mean_ev_per_a",
    ]
    print("| set | " + " | ".join(keys) + " |")
    for name, acc in result["accuracy"].items():
        print(f"| {name} | " + " | ".join(f"{acc.get(k, float('nan')):.4g}" for k in keys) + " |")
    if "cost" in result:
        print(json.dumps(result["cost"], indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
