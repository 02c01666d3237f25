r"""Internal features of an eager torch module, captured with forward hooks.

For the spectrum of a layer, its output for every rotated copy :math:`g_k x`
must be stacked as ``[K, F]`` with the same feature (atom, edge, channel) in
the same column for every copy. symmd guarantees it: one structure is
evaluated at a time, its copies share one neighbour list (so the atoms and the
neighbours of every atom come in the same order), and each chunk of copies is
one forward call in which rows are grouped by copy. A captured tensor
``[rows, ...]`` of a chunk of ``C`` copies is therefore read as
``[C, rows / C, ...]``: per-atom features ``[C N, d]``, per-edge features in
PET's padded layout ``[C N, max_neighbours, d]`` or flat ``[C P, d]``, and
per-copy features ``[C, d]`` all work.

A module that returns a tuple or list gives one entry per tensor element,
labelled ``name[i]``; a dict gives ``name[key]``. A module that runs several
times in one forward call gives ``name``, ``name#1``, ...

Padded edge layouts: a tensor ``[N, M, ...]`` per copy whose ``M`` is the
largest neighbour count of a full neighbour list of the model carries, for
atom ``i``, its ``n_i`` real neighbours in slots ``0 .. n_i - 1`` and padding
after them (PET's layout). Padding is not a feature of the structure (it is
never read out, yet attention makes it vary with orientation), so
:func:`drop_padding` keeps only the real slots.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["LayerCapture", "drop_padding"]


def _tensors(output, label: str):
    """(label, tensor) pairs of a module output."""
    if isinstance(output, torch.Tensor):
        return [(label, output)]
    if isinstance(output, (tuple, list)):
        return [(f"{label}[{i}]", t) for i, t in enumerate(output) if isinstance(t, torch.Tensor)]
    if isinstance(output, dict):
        return [(f"{label}[{k}]", t) for k, t in output.items() if isinstance(t, torch.Tensor)]
    return []


class LayerCapture:
    """Context manager: forward hooks on ``names`` (submodules of ``root``).

    ``root`` is the module called once per chunk of rotated copies (the
    adapter's :meth:`~symmd.models.Adapter.hook_root`); it delimits the
    chunks. After the evaluation, :meth:`stacked` returns ``{label: [K, F]}``
    (detached, in the model's dtype, on the CPU).
    """

    def __init__(self, root: torch.nn.Module, names: Sequence[str]):
        if isinstance(names, str):
            raise TypeError(f"layers must be a list of module names, got the string {names!r}")
        modules = dict(root.named_modules())
        missing = [name for name in names if name not in modules or not name]
        if missing:
            available = [k for k in modules if k]
            shown = available if len(available) <= 40 else available[:40] + ["..."]
            raise ValueError(f"the model has no layer {missing[0]!r}; its layers are {shown}")
        self.root = root
        self.modules = {name: modules[name] for name in names}
        self._handles: list = []
        self._chunks: list[dict[str, list[torch.Tensor]]] = []
        self._calls: list[dict[str, int]] = []

    def _start_chunk(self, module, args) -> None:
        self._chunks.append({})
        self._calls.append({})

    def _hook(self, name: str):
        def hook(module, args, output) -> None:
            if not self._chunks:  # called outside the root's forward
                self._start_chunk(module, args)
            chunk, calls = self._chunks[-1], self._calls[-1]
            count = calls.get(name, 0)
            calls[name] = count + 1
            label = name if count == 0 else f"{name}#{count}"
            for key, tensor in _tensors(output, label):
                chunk.setdefault(key, []).append(tensor.detach().cpu())

        return hook

    def __enter__(self) -> LayerCapture:
        self._chunks, self._calls = [], []
        self._handles = [self.root.register_forward_pre_hook(self._start_chunk)]
        self._handles += [
            module.register_forward_hook(self._hook(name)) for name, module in self.modules.items()
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def stacked(self, chunk_sizes: Sequence[int]) -> dict[str, tuple[torch.Tensor, tuple]]:
        """``{label: ([K, F] features, shape of one copy)}`` given the number
        of copies in each chunk."""
        if len(self._chunks) != len(chunk_sizes):
            raise RuntimeError(
                f"captured {len(self._chunks)} forward calls for {len(chunk_sizes)} chunks; "
                "the hooked root module must run once per chunk of rotated copies"
            )
        labels = dict.fromkeys(key for chunk in self._chunks for key in chunk)
        out = {}
        for label in labels:
            rows = []
            for chunk, n_copies in zip(self._chunks, chunk_sizes):
                tensors = chunk.get(label, [])
                if len(tensors) != 1:
                    raise ValueError(
                        f"the layer output {label!r} was captured {len(tensors)} times in one chunk"
                    )
                value = tensors[0]
                if value.ndim == 0 or value.shape[0] % n_copies:
                    raise ValueError(
                        f"the layer output {label!r} has shape {tuple(value.shape)}, whose first axis "
                        f"is not a multiple of the {n_copies} rotated copies of its chunk; only "
                        "outputs whose rows are grouped by copy (atoms, edges, structures) work"
                    )
                rows.append(value.reshape(n_copies, -1))
                shape = (value.shape[0] // n_copies, *value.shape[1:])
            widths = {r.shape[1] for r in rows}
            if len(widths) != 1:
                raise ValueError(
                    f"the layer output {label!r} has {sorted(widths)} values per copy in different "
                    "chunks; the layout must be the same for every rotated copy"
                )
            out[label] = (torch.cat(rows), shape)
        return out


def drop_padding(
    feats: torch.Tensor, shape: tuple, neighbor_counts: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Keep the real neighbour slots of a padded ``[N, M, ...]`` layout.

    ``feats [K, F]`` with one copy of shape ``shape``; ``neighbor_counts``:
    per-atom neighbour counts ``[N]`` of each full neighbour list of the
    model. Returns ``feats`` unchanged when no list matches ``N`` and ``M``.
    """
    if len(shape) < 2:
        return feats
    for counts in neighbor_counts:
        if shape[0] == len(counts) and shape[1] == int(counts.max()):
            keep = torch.arange(shape[1])[None, :] < counts[:, None]  # [N, M]
            copies = feats.reshape(feats.shape[0], shape[0], shape[1], -1)
            return copies[:, keep].reshape(feats.shape[0], -1)
    return feats
