"""O(3) machinery: quadratures, Wigner-D matrices, characters, Cartesian tensors.

Conventions (ASE row vectors): a group element ``g`` is an orthogonal 3x3
matrix ``R``; it maps positions ``r -> r @ R.T`` and cell rows ``h -> h @ R.T``.
All builders work in float64 and are cached; functions of ``rotations`` return
results in the dtype and device of their input.
"""

from ._cartesian import cartesian_to_spherical, spherical_to_cartesian
from ._quadrature import (
    LEBEDEV_ORDERS,
    Quadrature,
    check_orthogonal,
    design_degrees,
    haar,
    lebedev,
    metatomic_size,
    point_group,
    quadrature,
    random_o3,
    so3_design,
)
from ._wigner import character, proper_part, representation, wigner_d, wigner_d_series

__all__ = [
    "LEBEDEV_ORDERS",
    "Quadrature",
    "check_orthogonal",
    "cartesian_to_spherical",
    "character",
    "design_degrees",
    "haar",
    "lebedev",
    "metatomic_size",
    "point_group",
    "proper_part",
    "quadrature",
    "random_o3",
    "representation",
    "so3_design",
    "spherical_to_cartesian",
    "wigner_d",
    "wigner_d_series",
]
