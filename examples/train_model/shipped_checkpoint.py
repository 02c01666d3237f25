"""Write the metatrain checkpoint of a shipped model from its exported file.

Training on a CPU is seeded but not bit-reproducible across machines, thread
counts or library versions: a rerun of ``train.sh`` gives a model close to, not
equal to, ``symmd/data/pet-emt-cual.pt``. Fine-tuning and LLPR need the
*shipped* model as a metatrain checkpoint, so this script takes the weights
out of the exported TorchScript file and puts them into a checkpoint of the
same architecture:

1. ``TEMPLATE`` is any metatrain checkpoint of the same recipe (for the
   periodic model: ``run_periodic/model_periodic.ckpt`` written by
   ``train.sh``); it provides the hyper-parameters and the dataset info
   (atomic types, targets, units), which the exported file does not carry;
2. every parameter and buffer of the exported model replaces the template's
   (the names must match one to one, or the script stops);
3. ``model.get_checkpoint()`` (weights only, no optimizer state) is saved;
4. the checkpoint, loaded eagerly, must reproduce the exported model's energy
   and forces on the held-out frames to float32 round-off, or the script stops.

Usage::

    python shipped_checkpoint.py TEMPLATE.ckpt ../../symmd/data/pet-emt-cual.pt \\
        ../data/pet-emt-cual.ckpt --check test_periodic.xyz
"""

import argparse

import metatomic.torch  # noqa: F401 (registers the TorchScript classes in checkpoints)
import torch
from metatrain.utils.io import model_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("template", help="a metatrain checkpoint of the same recipe")
    parser.add_argument("exported", help="the shipped metatomic model (.pt)")
    parser.add_argument("output", help="the checkpoint to write (.ckpt)")
    parser.add_argument("--check", help="extxyz frames on which the two must agree")
    args = parser.parse_args()

    template = torch.load(args.template, map_location="cpu", weights_only=False)
    model = model_from_checkpoint(template, context="restart")
    weights = torch.jit.load(args.exported, map_location="cpu").module.state_dict()
    own = model.state_dict()
    if set(weights) != set(own):
        raise SystemExit(
            f"the exported model and the template differ in their weights: only in the "
            f"export {sorted(set(weights) - set(own))}, only in the template "
            f"{sorted(set(own) - set(weights))}"
        )
    model.load_state_dict(weights, strict=True)
    checkpoint = model.get_checkpoint()
    checkpoint["best_model_state_dict"] = checkpoint["model_state_dict"]
    torch.save(checkpoint, args.output)
    print(f"wrote {args.output} ({len(weights)} tensors)")

    if args.check:
        import ase.io

        from symmd.models import evaluate_rotated, load

        frames = ase.io.read(args.check, ":")
        eye = torch.eye(3, dtype=torch.float64)
        worst = {"energy": 0.0, "forces": 0.0}
        exported, eager = load(args.exported), load(args.output)
        for atoms in frames:
            a = evaluate_rotated(exported, atoms, eye, ["energy", "forces"])
            b = evaluate_rotated(eager, atoms, eye, ["energy", "forces"])
            for key in worst:
                worst[key] = max(worst[key], float((a[key] - b[key]).abs().max()))
        print(
            f"largest difference over {len(frames)} frames: energy {worst['energy']:.2e} eV, "
            f"forces {worst['forces']:.2e} eV/A"
        )
        if worst["energy"] > 1e-4 or worst["forces"] > 1e-4:
            raise SystemExit("the checkpoint does not reproduce the exported model")


if __name__ == "__main__":
    main()
