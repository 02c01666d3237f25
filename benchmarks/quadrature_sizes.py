"""Size of symmd's exact O(3) rule against metatomic-ase's default, per degree.

metatomic's SymmetrizedCalculator(l_max=L) uses the smallest Lebedev order
>= L (negative-weight orders included) x (2L + 1) in-plane angles x 2
(inversion). symmd.o3.quadrature(L) takes the smallest rule it knows that is
exact to L (point groups D2/T/O/I, the shipped Gauss-type SO(3) designs of
degrees 4 and 6-9, or positive Lebedev x (L + 1) angles), also doubled by
inversion. Both are checked for exactness here, and the table also lists the
Lebedev x (L + 1) size that the designs replace.

    python benchmarks/quadrature_sizes.py [--max-degree 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch

from symmd import o3


def max_exact_degree(q: o3.Quadrature, up_to: int) -> int:
    """Largest L <= up_to such that the rule integrates D^l exactly for l <= L."""
    _, det = o3.proper_part(q.rotations)
    for lam, d in enumerate(o3.wigner_d_series(up_to, q.rotations)):
        for parity in (torch.ones_like(det), det):
            total = torch.einsum("k,kmn->mn", q.weights * parity, d)
            exact = 1.0 if lam == 0 and parity is not det else 0.0
            if float((total - exact).abs().max()) > 1e-12:
                return lam - 1
    return up_to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-degree", type=int, default=9)
    parser.add_argument(
        "--json", default=str(pathlib.Path(__file__).parent / "results" / "quadrature_sizes.json")
    )
    args = parser.parse_args()
    rows = []
    for degree in range(1, args.max_degree + 1):
        q = o3.quadrature(degree)
        rows.append(
            {
                "degree": degree,
                "symmd_rule": q.name,
                "symmd_size": len(q),
                "symmd_exact_to": max_exact_degree(q, degree + 1),
                "lebedev_size": len(o3.lebedev(degree)),
                "metatomic_size": o3.metatomic_size(degree),
                "ratio": o3.metatomic_size(degree) / len(q),
            }
        )
    print(
        f"{'L':>3} {'symmd rule':<26} {'size':>6} {'exact to':>9} {'lebedev':>8} "
        f"{'metatomic':>10} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['degree']:>3} {r['symmd_rule']:<26} {r['symmd_size']:>6} "
            f"{r['symmd_exact_to']:>9} {r['lebedev_size']:>8} {r['metatomic_size']:>10} "
            f"{r['ratio']:>6.1f}"
        )
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
