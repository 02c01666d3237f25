r"""Low-rank adapters (LoRA) on the linear layers of a torch module.

For a linear layer :math:`y = x W^T + b` (:math:`W` ``[out, in]``) an adapter of
rank :math:`r` adds

.. math:: y = x W^T + b + s\, (x A^T) B^T, \qquad s = \alpha / r,

with :math:`A` ``[r, in]`` (initialised like ``torch.nn.Linear``'s weight:
uniform in :math:`\pm 1/\sqrt{in}`) and :math:`B` ``[out, r]`` (zeros), so that
at the start the predictions are exactly those of the original module (the
added term is an exact zero). Only :math:`A` and :math:`B` are trained;
:meth:`LowRankAdapters.merge` then writes :math:`W \leftarrow W + s B A` into
the layer and removes the adapters, which leaves a module of the original
architecture and parameter names (a plain metatrain model, exportable as a
plain metatomic model).

The adapters are forward hooks on the layers: the module's structure and its
``state_dict`` keys never change, so the adapted module still loads, exports
and matches glob patterns by its own names. Same idea as metatrain's PET LoRA
fine-tuning (which replaces the attention's ``input_linear`` and
``output_linear`` by wrapper modules); here every selected ``torch.nn.Linear``
is adapted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["LowRankAdapters", "linear_layers"]


def linear_layers(module: torch.nn.Module) -> list[str]:
    """Names of the ``torch.nn.Linear`` submodules of ``module``, in order."""
    return [name for name, sub in module.named_modules() if isinstance(sub, torch.nn.Linear)]


class LowRankAdapters(torch.nn.Module):
    """Rank-``rank`` adapters on the linear layers ``names`` of ``module``.

    ``alpha``: the scale :math:`s = \\alpha / r` of the adapted term (default
    ``alpha = rank``: :math:`s = 1`). The parameters ``a.<i>`` ``[rank, in]``
    and ``b.<i>`` ``[out, rank]`` are created in each layer's dtype and device
    (``a`` drawn from torch's global generator: seed it first). The hooks
    are active from construction until :meth:`merge` or :meth:`remove`.
    """

    def __init__(
        self, module: torch.nn.Module, names: Sequence[str], rank: int, alpha: float
    ) -> None:
        super().__init__()
        layers = dict(module.named_modules())
        self.names = list(names)
        self.rank = int(rank)
        self.scaling = float(alpha) / self.rank
        self.a = torch.nn.ParameterList()
        self.b = torch.nn.ParameterList()
        self._layers: list[torch.nn.Linear] = []
        self._handles: list = []
        for i, name in enumerate(self.names):
            layer = layers[name]
            if not isinstance(layer, torch.nn.Linear):
                raise TypeError(f"{name!r} is a {type(layer).__name__}, not a torch.nn.Linear")
            weight = layer.weight
            bound = 1.0 / math.sqrt(layer.in_features)
            a = torch.empty(self.rank, layer.in_features, dtype=weight.dtype)
            a.uniform_(-bound, bound)
            self.a.append(torch.nn.Parameter(a.to(weight.device)))
            self.b.append(
                torch.nn.Parameter(
                    torch.zeros(layer.out_features, self.rank, dtype=weight.dtype).to(weight.device)
                )
            )
            self._layers.append(layer)
            self._handles.append(layer.register_forward_hook(self._hook(i)))

    def _hook(self, i: int):
        def add_low_rank(layer, inputs, output):
            low = torch.nn.functional.linear(inputs[0], self.a[i])
            return output + self.scaling * torch.nn.functional.linear(low, self.b[i])

        return add_low_rank

    def delta(self, i: int) -> torch.Tensor:
        """The weight update :math:`s B A` ``[out, in]`` of layer ``i``."""
        return self.scaling * (self.b[i] @ self.a[i])

    def remove(self) -> None:
        """Detach the hooks without changing the layers."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def merge(self) -> None:
        """Add :math:`s B A` to every adapted weight and detach the hooks."""
        if not self._handles:
            raise RuntimeError("the adapters were already merged or removed")
        with torch.no_grad():
            for i, layer in enumerate(self._layers):
                layer.weight += self.delta(i).to(layer.weight)
        self.remove()
