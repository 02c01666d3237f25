r"""Building rotated copies: the one kernel that rotates the inputs of a model.

A group element :math:`g` (matrix :math:`R`) acts on row vectors as
:math:`r \to r R^T` (ASE convention, ``docs/API.md``): positions ``[N, 3]``,
cell rows ``[3, 3]`` and neighbour-pair vectors ``[P, 3]`` alike. Used by the
batched engine (:func:`symmd.models.evaluate_rotated`) and by the exported
metatomic model (:func:`symmd.export`), which runs it inside MD engines, so it
is TorchScript-compatible.
"""

import torch

__all__ = ["rotate"]


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` rotated by ``rot``: :math:`x R^T`.

    ``x``: ``[..., M, 3]`` row vectors; ``rot``: ``[..., 3, 3]``, broadcast
    against the leading axes of ``x``. For example ``x [N, 3]`` with
    ``rot [K, 3, 3]`` gives the ``K`` rotated copies ``[K, N, 3]``; ``x [C, 1, 3]``
    with ``rot [C, 3, 3]`` rotates each row by its own matrix. Dtype and device
    of the inputs (they must agree); differentiable; TorchScript-compatible.
    """
    return torch.matmul(x, rot.transpose(-1, -2))
