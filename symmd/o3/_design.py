r"""Computing Gauss-type quadratures on SO(3) (run as a script to regenerate them).

A rule :math:`\{R_k, w_k\}_{k=1}^K` (proper rotations, positive weights) is exact
to degree :math:`L` when it solves the moment equations

.. math:: \sum_k w_k = 1, \qquad \sum_k w_k D^\lambda(R_k) = 0
   \quad (1 \le \lambda \le L),

:math:`\sum_{\lambda \le L} (2\lambda+1)^2 = (L+1)(2L+1)(2L+3)/3` real equations
for :math:`4K` unknowns (three per rotation, one per weight). They are solved
here by a damped Gauss-Newton (Levenberg-Marquardt) iteration with
minimum-norm steps from Haar-random starts:

- weights :math:`w_k = v_k^2` (kept non-negative by construction);
- rotations move on the group, :math:`R_k \to \exp(\omega_k \times) R_k`, so the
  derivative of :math:`D^\lambda(R_k)` along :math:`\omega_{k,a}` is
  :math:`J^\lambda_a D^\lambda(R_k)` with the Lie-algebra generators
  :math:`J^\lambda_a = Q_\lambda^T (J^{\lambda-1}_a \otimes 1 + 1 \otimes E_a)
  Q_\lambda` (same coupling as :func:`symmd.o3.wigner_d_series`,
  :math:`J^1_a = E_a`, :math:`(E_a)_{ij} = -\epsilon_{aij}`), exact;
- the step :math:`\delta = -\mathcal J^T (\mathcal J \mathcal J^T + \mu)^{-1} r`
  is the damped minimum-norm solution of the linearized, under-determined
  system; :math:`\mu` shrinks after accepted steps and grows otherwise.

A rule is accepted when every residual is below ``tol`` (default 1e-14) and
every weight is positive. Inversion is added by :mod:`symmd.o3` (``g`` and
``-g`` with half weights), which makes an SO(3) rule exact for both O(3)
parities.

Regenerate the package data (seeded, deterministic for a given numpy/torch)::

    python -m symmd.o3._design [--degrees 6 7 8 9] [--out symmd/o3/data/so3_designs.npz]
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import time
from typing import Optional

import numpy as np
import torch

from ._wigner import _coupling, wigner_d_series

__all__ = ["solve_design", "moment_residuals", "n_moments"]


def n_moments(degree: int) -> int:
    """Number of real moment equations up to ``degree`` (the dimension of the
    polynomials of degree <= ``degree`` on SO(3))."""
    return (degree + 1) * (2 * degree + 1) * (2 * degree + 3) // 3


@functools.cache
def _generators(max_lam: int) -> tuple[torch.Tensor, ...]:
    """``J^lam_a``, float64 ``[3, 2lam+1, 2lam+1]`` for ``lam = 0..max_lam``."""
    eps = torch.zeros(3, 3, 3, dtype=torch.float64)
    for a, b, c in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
        eps[a, b, c], eps[a, c, b] = 1.0, -1.0
    e = -eps  # (E_a)_ij = -eps_aij: E_a x = e_a cross x
    out = [torch.zeros(3, 1, 1, dtype=torch.float64), e]
    eye3 = torch.eye(3, dtype=torch.float64)
    for lam in range(2, max_lam + 1):
        q = _coupling(lam)
        prev = out[-1]
        eye_prev = torch.eye(2 * lam - 1, dtype=torch.float64)
        gen = torch.einsum("ipa,xij,pq,jqb->xab", q, prev, eye3, q) + torch.einsum(
            "ipa,ij,xpq,jqb->xab", q, eye_prev, e, q
        )
        out.append(gen)
    return tuple(out)


def moment_residuals(rotations: torch.Tensor, weights: torch.Tensor, degree: int) -> torch.Tensor:
    """``[sum w - 1, vec(sum_k w_k D^lam(R_k)) for lam = 1..degree]``, float64."""
    series = wigner_d_series(degree, rotations)
    parts = [weights.sum()[None] - 1.0]
    parts += [torch.einsum("k,kmn->mn", weights, d).reshape(-1) for d in series[1:]]
    return torch.cat(parts)


def _residual_and_jacobian(rot: torch.Tensor, v: torch.Tensor, degree: int):
    w = v * v
    series = wigner_d_series(degree, rot)
    gens = _generators(degree)
    k = rot.shape[0]
    res = [w.sum()[None] - 1.0]
    jac = [torch.cat([torch.zeros(1, 3 * k, dtype=torch.float64), (2 * v)[None]], dim=1)]
    for lam in range(1, degree + 1):
        d = series[lam]
        res.append(torch.einsum("k,kmn->mn", w, d).reshape(-1))
        jd = torch.einsum("amn,knp->mpka", gens[lam], d) * w[:, None]  # [m, p, K, 3]
        dv = (d * (2 * v)[:, None, None]).permute(1, 2, 0)  # [m, p, K]
        n2 = (2 * lam + 1) ** 2
        jac.append(torch.cat([jd.reshape(n2, 3 * k), dv.reshape(n2, k)], dim=1))
    return torch.cat(res), torch.cat(jac)


def _rotvec_to_matrix(omega: torch.Tensor) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.from_rotvec(omega.numpy()).as_matrix())


def solve_design(
    degree: int,
    size: int,
    seed: int = 0,
    max_iter: int = 400,
    tol: float = 1e-14,
) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Try to find a ``size``-point positive SO(3) rule exact to ``degree``.

    Starts from ``size`` Haar-random rotations (``numpy.random.default_rng(seed)``)
    with equal weights and runs the Levenberg-Marquardt iteration of the module
    docstring. Returns ``(rotations [K, 3, 3], weights [K])`` as float64 numpy
    arrays when the largest residual is below ``tol`` with all weights positive
    (above ``1e-3 / size``), otherwise ``None``.
    """
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    rot = torch.from_numpy(Rotation.random(size, random_state=rng).as_matrix())
    v = torch.full((size,), size**-0.5, dtype=torch.float64)
    res, jac = _residual_and_jacobian(rot, v, degree)
    cost = float(res @ res)
    mu = 1e-2
    for _ in range(max_iter):
        if float(res.abs().max()) < tol:
            break
        jjt = jac @ jac.T
        eye = torch.eye(jjt.shape[0], dtype=torch.float64)
        accepted = False
        for _ in range(12):
            step = -jac.T @ torch.linalg.solve(jjt + mu * eye, res)
            omega = step[: 3 * size].reshape(size, 3)
            new_rot = _rotvec_to_matrix(omega) @ rot
            new_v = v + step[3 * size :]
            new_res, new_jac = _residual_and_jacobian(new_rot, new_v, degree)
            new_cost = float(new_res @ new_res)
            if new_cost < cost:
                rot, v, res, jac, cost = new_rot, new_v, new_res, new_jac, new_cost
                mu = max(mu / 5, 1e-15)
                accepted = True
                break
            mu *= 8
        if not accepted:
            return None
    w = v * v
    if float(res.abs().max()) >= tol or float(w.min()) <= 1e-3 / size:
        return None
    return rot.numpy(), w.numpy()


#: degree -> (size, seed) of the shipped rules: the smallest size the search
#: below reached, and the first seed that converged at that size.
KNOWN: dict[int, tuple[int, int]] = {4: (43, 0), 6: (116, 0), 7: (172, 0), 8: (244, 0), 9: (334, 1)}


def search(degree: int, sizes, seeds, max_iter: int = 400):
    """First ``(size, seed, (rotations, weights))`` that converges, smallest size first."""
    for size in sizes:
        for seed in seeds:
            t0 = time.perf_counter()
            found = solve_design(degree, size, seed=seed, max_iter=max_iter)
            dt = time.perf_counter() - t0
            status = "found" if found is not None else "no"
            print(f"degree {degree} size {size} seed {seed}: {status} ({dt:.1f} s)", flush=True)
            if found is not None:
                return size, seed, found
    return None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate symmd's SO(3) Gauss-type rules.")
    parser.add_argument("--degrees", type=int, nargs="+", default=sorted(KNOWN))
    parser.add_argument(
        "--search",
        action="store_true",
        help="search sizes upwards from ceil(n_moments / 4) instead of the known (size, seed)",
    )
    parser.add_argument("--seeds", type=int, default=20, help="seeds tried per size (--search)")
    parser.add_argument("--below", type=int, default=0, help="start this many sizes lower")
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "data" / "so3_designs.npz")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = pathlib.Path(args.out)
    data = dict(np.load(out)) if out.exists() else {}
    for degree in args.degrees:
        if args.search or degree not in KNOWN:
            start = -(-n_moments(degree) // 4) - args.below
            result = search(degree, range(start, start + 40), range(args.seeds), args.max_iter)
        else:
            size, seed = KNOWN[degree]
            result = search(degree, [size], [seed], args.max_iter)
        if result is None:
            print(f"degree {degree}: nothing found")
            continue
        size, seed, (rot, w) = result
        data[f"rotations_{degree}"] = rot
        data[f"weights_{degree}"] = w
        data[f"seed_{degree}"] = np.array(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **data)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
