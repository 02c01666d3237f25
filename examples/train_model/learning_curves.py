"""Validation learning curves from metatrain training logs, as JSON.

Reads the ``Epoch: ...`` lines that ``mtt train`` writes (with
``log_interval: 1``, one per epoch) and keeps, per epoch, the learning rate
and every validation RMSE: energy (meV/atom), conservative forces (meV/A),
``non_conservative_force`` (meV/A, over Cartesian components; metatrain labels
it "per atom" but does not divide a per-atom target by the number of atoms)
and ``non_conservative_stress`` (metatrain's "per atom" value, meV/A^3 divided
by the number of atoms of the structure).

Usage::

    python learning_curves.py NAME=run/train.out [NAME=...] [--describe NAME=TEXT ...] \\
        --json direct_curves.json

Several runs go to one file; runs already in ``--json`` are kept unless named
again.
"""

import argparse
import json
import os
import re

EPOCH = re.compile(r"Epoch:\s+(\d+) \| learning rate: ([0-9.e+-]+) \|(.*)$")
METRIC = re.compile(r"validation ([A-Za-z_:]+) RMSE(?: \(per atom\))?:\s+([0-9.e+-]+) (\S+)")
NAMES = {
    "energy": "energy_mev_per_atom",
    "forces": "forces_mev_per_a",
    "virial": "virial_mev_per_atom",
    "non_conservative_force": "direct_forces_mev_per_a",
    "non_conservative_stress": "direct_stress_per_atom_mev_per_a3",
}


def parse(path):
    """``{"epoch": [...], "learning_rate": [...], "validation": {metric: [...]}}``"""
    epochs, rates, values = [], [], {}
    seen = set()
    with open(path) as fh:
        for line in fh:
            match = EPOCH.search(line)
            if not match or int(match.group(1)) in seen:
                continue
            seen.add(int(match.group(1)))
            epochs.append(int(match.group(1)) + 1)  # epochs completed
            rates.append(float(match.group(2)))
            for name, value, _unit in METRIC.findall(match.group(3)):
                values.setdefault(NAMES.get(name, name), []).append(float(value))
    if not epochs:
        raise ValueError(f"no 'Epoch:' lines in {path}; was it written by mtt train?")
    return {"epoch": epochs, "learning_rate": rates, "validation": values}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=PATH of a metatrain log")
    parser.add_argument("--describe", nargs="*", default=[], help="NAME=TEXT")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    data = {}
    if os.path.exists(args.json):
        with open(args.json) as fh:
            data = json.load(fh)
    descriptions = dict(item.split("=", 1) for item in args.describe)
    for item in args.runs:
        name, path = item.split("=", 1)
        entry = parse(path)
        entry["description"] = descriptions.get(name, data.get(name, {}).get("description", ""))
        data[name] = entry
    with open(args.json, "w") as fh:  # one line per run and field, diff-friendly
        fh.write("{\n")
        for i, (name, entry) in enumerate(data.items()):
            fields = [f'  "{k}": {json.dumps(v)}' for k, v in entry.items()]
            fh.write(f'"{name}": {{\n' + ",\n".join(fields) + "\n}")
            fh.write(",\n" if i < len(data) - 1 else "\n")
        fh.write("}\n")
    for name, entry in data.items():
        last = {k: v[-1] for k, v in entry["validation"].items()}
        print(name, len(entry["epoch"]), "epochs, last:", last)


if __name__ == "__main__":
    main()
