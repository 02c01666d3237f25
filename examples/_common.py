"""What the examples share: where they write, and how they draw momenta.

Each example is a script run as ``python examples/NAME.py``, so this folder
is on ``sys.path`` and ``from _common import ...`` finds this module.
"""

import argparse
import pathlib


def output_dir(description: str) -> pathlib.Path:
    """``--out DIR`` (default ``examples/output/``, ignored by git), created."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent / "output",
        help="directory for the files this example writes (default examples/output/)",
    )
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    return out


def thermalize(atoms, temperature_K, rng):
    """Maxwell-Boltzmann momenta (``thermalize_momenta`` from ASE 3.29 on)."""
    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # older ASE
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        return
    thermalize_momenta(atoms, temperature_K, rng=rng)
