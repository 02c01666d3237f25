r"""Fine-tune a model with an equivariance penalty.

The minimum inductive bias at zero inference cost (arXiv 2603.24638, Fig. 5):
retrain some parameters of an unconstrained model with

.. math:: L = L_\mu + \gamma L_\sigma ,

- :math:`L_\mu = \sum_p \mathrm{MSE}_p / s_p^2`: mean squared error against the
  labels of the energy per atom, the forces, the stress (when labelled) and the
  non-conservative forces/stress (against the force/stress labels) when the
  model has them; with ``augment=True`` (default) on every rotated copy
  brought back to the input frame (data augmentation), else on the unrotated
  structure;
- :math:`L_\sigma = \sum_p \overline{\widehat{A^2_p}} / (c_p s_p^2)`: the
  unbiased estimate of :math:`A^2` (:func:`symmd.metrics.sample_error`: the
  sample variance, denominator :math:`m - 1`, of the back-transformed responses
  of ``m = rotations`` fresh Haar-random O(3) draws per step; with ``augment``
  each structure is also turned by its own random element first, so the
  draws differ between structures), averaged over structures (energy, divided
  by :math:`N^2`: per atom) or atoms (forces), and divided by the :math:`c_p`
  scalar components (1, 3, 9) so that it compares with a per-component MSE.

:math:`s_p^2` is the variance of the labels of ``p`` over the training set (of
the model's own initial predictions with ``labels=False``), so that one
:math:`\gamma` weighs every output alike. All copies of a batch go through
:func:`symmd.models.evaluate_rotated` in one call with the autograd graph kept
(forces by a double backward).

What is trained (``trainable``): the readout (PET's heads and last layers),
``"lora"`` (the readout plus low-rank adapters on every other linear layer,
:mod:`symmd._lora`, merged into the weights at the end, so that the saved
checkpoint and the exported model are plain metatrain / metatomic files),
``"all"``, or glob patterns of parameter names. Adam with a linear warm-up
over the first 10 % of the steps and a cosine decay.

``max_mae_increase`` turns the gamma scan into a choice: the most symmetric
model whose validation force MAE stays within the budget
(:mod:`symmd._finetune_budget`).

Labels are read by :func:`read_labels` (ASE's and metatrain's default names:
``energy``, ``forces``, ``stress`` or ``virial``).
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import math
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from ._finetune_budget import BUDGET_GAMMAS, check_budget, select
from ._finetune_loss import equivariance_penalty, evaluate, losses, outputs_of, scales_of
from ._labels import read_labels
from ._lora import LowRankAdapters, linear_layers
from .models import CallableAdapter, load, quiet_torchscript
from .o3 import random_o3

__all__ = [
    "BUDGET_GAMMAS",
    "DEFAULT_TRAINABLE",
    "MODES",
    "FinetuneResult",
    "equivariance_penalty",
    "finetune",
    "read_labels",
]

#: glob patterns of the parameters trained by default: PET's heads and last layers
DEFAULT_TRAINABLE = ("*heads.*", "*last_layers.*")


@dataclasses.dataclass
class FinetuneResult:
    """One fine-tuning run: ``gamma``, the fine-tuned eager ``model``,
    ``history`` (per epoch: ``L_mu``, ``L_sigma``), ``metrics`` (the JSON
    written to ``out``) and ``paths`` of the files written."""

    gamma: float
    model: torch.nn.Module
    history: list
    metrics: dict
    paths: dict
    scan: Optional[dict] = None


MODES = ("readout", "lora", "all")


def _select(module: torch.nn.Module, trainable) -> tuple[list[str], list[str]]:
    """``(trained parameter names, linear layers to adapt)`` for ``trainable``;
    sets ``requires_grad`` accordingly."""
    names = [name for name, _ in module.named_parameters()]
    adapt: list[str] = []
    if isinstance(trainable, str) and trainable == "all":
        chosen = names
    elif isinstance(trainable, str) and trainable in ("readout", "lora"):
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in DEFAULT_TRAINABLE)]
        if trainable == "lora":
            adapt = [n for n in linear_layers(module) if f"{n}.weight" not in chosen]
            if not adapt:
                raise ValueError(
                    "trainable='lora' found no torch.nn.Linear layer outside the readout "
                    f"to adapt; the model's parameters are {names}"
                )
        elif not chosen:
            raise ValueError(
                f"trainable='readout' found no readout parameter (patterns "
                f"{list(DEFAULT_TRAINABLE)}); give glob patterns of the model's parameter "
                f"names instead, which are {names}"
            )
    else:
        patterns = [trainable] if isinstance(trainable, str) else trainable
        if (
            not isinstance(patterns, (list, tuple))
            or not patterns
            or not all(isinstance(p, str) for p in patterns)
        ):
            raise TypeError(
                f"trainable must be one of {MODES} or a list of glob patterns, got {trainable!r}"
            )
        patterns = list(patterns)
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not chosen and isinstance(trainable, str) and not any(c in trainable for c in "*?["):
            raise ValueError(
                f"trainable={trainable!r} is neither a mode {MODES} nor a parameter name; "
                f"glob patterns are also accepted, e.g. ['*heads.*']"
            )
        if not chosen:
            raise ValueError(
                f"no parameter matches trainable={patterns}; the model's parameters are {names}"
            )
    for name, param in module.named_parameters():
        param.requires_grad_(name in chosen)
    return chosen, adapt


def _load(checkpoint) -> tuple[torch.nn.Module, bool]:
    """``(eager module, is_metatrain)`` from a ``.ckpt`` path or a module."""
    if isinstance(checkpoint, torch.nn.Module):
        is_mtt = all(callable(getattr(checkpoint, n, None)) for n in ("export", "get_checkpoint"))
        return copy.deepcopy(checkpoint), is_mtt
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint must be a path to a metatrain checkpoint (.ckpt) or a torch module, "
            f"got {type(checkpoint).__name__}"
        )
    path = os.fspath(checkpoint)
    if not path.endswith(".ckpt"):
        raise ValueError(
            f"checkpoint={path!r} is not a metatrain checkpoint: an exported model (.pt) is "
            "TorchScript and cannot be trained; pass the .ckpt it was exported from"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    with quiet_torchscript():
        try:
            from metatrain.utils.io import load_model
        except ImportError as error:
            raise ImportError(
                f"fine-tuning the checkpoint {path!r} needs metatrain: pip install 'symmd[train]'"
            ) from error
        return load_model(path), True


def _check_gammas(gamma) -> list[float]:
    many = isinstance(gamma, (list, tuple, np.ndarray))
    gammas = list(gamma) if many else [gamma]
    for g in gammas:
        if isinstance(g, bool) or not isinstance(g, (int, float, np.floating)) or not g >= 0:
            raise ValueError(f"gamma must be a number >= 0 (or a list of them), got {g!r}")
    return [float(g) for g in gammas]


def _positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _warmup_cosine(total: int, warmup: float = 0.1):
    """Learning-rate factor at step ``t`` of ``total``: linear from 0 over the
    first ``warmup`` fraction (Adam's first steps move every parameter by
    about ``lr``, whatever its gradient), then a cosine decay to 0."""
    rise = max(1, round(warmup * total))

    def factor(t: int) -> float:
        if t < rise:
            return (t + 1) / rise
        return 0.5 * (1.0 + math.cos(math.pi * (t - rise) / max(1, total - rise)))

    return factor


@dataclasses.dataclass(frozen=True)
class _Settings:
    trainable: Any
    rank: int
    alpha: float
    rotations: int
    epochs: int
    lr: float
    batch_size: int
    augment: bool
    seed: Optional[int]
    labels: bool
    degree: int
    progress: bool


def finetune(
    checkpoint,
    train,
    *,
    gamma: Union[float, Sequence[float], None] = None,
    valid=None,
    trainable: Union[str, Sequence[str]] = "readout",
    rank: int = 4,
    alpha: Optional[float] = None,
    rotations: int = 2,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 8,
    augment: bool = True,
    seed: Optional[int] = 0,
    out: Union[str, os.PathLike, None] = None,
    labels: bool = True,
    degree: int = 7,
    max_mae_increase: Optional[float] = None,
    progress: bool = True,
) -> Union[FinetuneResult, list[FinetuneResult]]:
    """Retrain the ``trainable`` parameters with :math:`L_\\mu + \\gamma L_\\sigma`.

    Parameters
    ----------
    checkpoint: a metatrain checkpoint (``.ckpt``, loaded eagerly) or an eager
        torch module (a metatrain model, or a callable with the batched
        signature of :class:`symmd.models.CallableAdapter`); never modified.
    train, valid: extxyz paths or lists of ``ase.Atoms`` with labels (see the
        module docstring for the names read). ``valid=None``: the metrics are
        measured on ``train``.
    gamma: weight of the penalty (>= 0), or a list: one run per value, each
        from the original weights. Required unless ``max_mae_increase`` is
        given (then default :data:`BUDGET_GAMMAS`).
    trainable: what is trained (every other parameter is frozen):
        ``"readout"`` (PET's heads and last layers, :data:`DEFAULT_TRAINABLE`);
        ``"lora"`` (the readout plus rank-``rank`` adapters on every other
        ``torch.nn.Linear``, merged into the weights at the end, see
        :mod:`symmd._lora`); ``"all"`` (every parameter); or glob patterns
        (:func:`fnmatch.fnmatchcase`) of parameter names.
    rank, alpha: LoRA rank (>= 1) and scale (the adapted term is multiplied
        by ``alpha / rank``; default ``alpha = rank``).
    rotations: Haar-random O(3) draws per structure and step (>= 2).
    epochs, lr, batch_size: Adam (in the model's dtype and device), structures
        per step, shuffled with ``seed`` (which also seeds torch and the draws).
    augment: ``True`` (default): :math:`L_\\mu` on the rotated copies, brought
        back to the input frame (data augmentation: its mean over draws adds
        :math:`A^2` to the error, a penalty of weight 1 of its own), each
        structure in its own random orientation, at one model copy less per
        structure; ``False``: on the unrotated structure, evaluated beside
        the rotated copies.
    out: folder; per gamma ``gamma_<g>/`` with ``result.json`` and, for a
        metatrain model, ``model.ckpt`` and the exported ``model.pt``; with
        several gammas ``summary.json`` and ``tradeoff.png``.
    labels: ``False`` trains on :math:`L_\\sigma` alone (no labels needed).
    degree: quadrature degree for the held-out equivariance error (>= 7 is
        recommended: A is a second moment).
    max_mae_increase: an accuracy budget (fraction, >= 0: ``0.10`` allows 10 %
        more force MAE than the un-fine-tuned model on the validation set):
        every gamma is run, and the one with the lowest force equivariance
        error A within the budget is returned (the un-fine-tuned model when
        none is); see :func:`symmd._finetune_budget.select`.

    Returns one :class:`FinetuneResult`, or a list of them for a list of
    gammas; with ``max_mae_increase``, the selected one, whose ``scan`` holds
    the table of every run (also written to ``out/scan.json``).
    """
    if gamma is None and max_mae_increase is None:
        raise TypeError("finetune() needs gamma (or max_mae_increase, which scans a default grid)")
    gammas = _check_gammas(BUDGET_GAMMAS if gamma is None else gamma)
    budget = check_budget(max_mae_increase)
    _positive("rotations", rotations, 2)
    _positive("epochs", epochs, 0)
    _positive("batch_size", batch_size)
    _positive("degree", degree)
    _positive("rank", rank)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a positive number (or None: alpha = rank), got {alpha!r}")
    settings = _Settings(trainable, rank, float(rank if alpha is None else alpha), rotations,
                         epochs, lr, batch_size, bool(augment), seed, labels, degree, progress)  # fmt: skip
    frames, train_labels = read_labels(train, "the training set", labels)
    if valid is None:
        valid_frames, valid_labels = frames, train_labels
    else:
        valid_frames, valid_labels = read_labels(valid, "the validation set", False)
    if budget is not None and "forces" not in valid_labels:
        where = "training" if valid is None else "validation"
        raise ValueError(
            f"max_mae_increase needs force labels on the {where} set to measure the force MAE"
        )
    data = (frames, train_labels, valid_frames, valid_labels)
    reference = None
    if budget is not None:  # the un-fine-tuned model: the MAE the budget is relative to
        reference = _run(checkpoint, data, 0.0, dataclasses.replace(settings, epochs=0), out, "raw")
    results = [_run(checkpoint, data, g, settings, out) for g in gammas]
    if out is not None and len(results) > 1:
        from ._plotting import tradeoff_figure

        summary = [r.metrics for r in results]
        path = pathlib.Path(out)
        (path / "summary.json").write_text(json.dumps(summary, indent=1))
        tradeoff_figure(summary, path / "tradeoff.png")
    if reference is not None and budget is not None:
        return select(reference, results, budget, out)
    return results if isinstance(gamma, (list, tuple, np.ndarray)) else results[0]


def _run(checkpoint, data, gamma: float, settings: _Settings, out, name=None) -> FinetuneResult:
    from tqdm import tqdm

    frames, labels, valid_frames, valid_labels = data
    module, is_mtt = _load(checkpoint)
    dtype = next(module.parameters()).dtype
    # (wrapping a metatrain model in an AtomisticModel freezes every parameter)
    adapter = load(module) if is_mtt else CallableAdapter(module, dtype=dtype)
    names, adapt = _select(module, settings.trainable)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    lora = LowRankAdapters(module, adapt, settings.rank, settings.alpha) if adapt else None
    params = [p for n, p in module.named_parameters() if n in names]
    params += list(lora.parameters()) if lora is not None else []
    count = sum(p.numel() for p in params)
    if settings.progress and settings.epochs > 0:
        what = f"{len(names)} tensors" + (
            f" + rank-{settings.rank} adapters on {len(adapt)} linear layers" if adapt else ""
        )
        print(f"gamma={gamma:g}: training {what} ({count} parameters)")
    outputs = outputs_of(adapter, labels, frames)
    scales = scales_of(adapter, frames, labels if settings.labels else {}, outputs)
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    n_batches = math.ceil(len(frames) / settings.batch_size)
    total = settings.epochs * n_batches
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total))
    history = []
    bar = tqdm(total=total, disable=not settings.progress or total == 0, desc=f"gamma={gamma:g}")
    start = time.perf_counter()
    for _ in range(settings.epochs):
        order = rng.permutation(len(frames))
        sums = np.zeros(2)
        for b in range(n_batches):
            index = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            q = random_o3(settings.rotations, rng)
            orient = random_o3(len(index), rng).rotations.numpy() if settings.augment else None
            l_mu, l_sigma = losses(adapter, frames, labels, index, outputs, scales, q,
                                   settings.labels, settings.augment, orient)  # fmt: skip
            optimizer.zero_grad()
            (l_mu + gamma * l_sigma).backward()
            optimizer.step()
            schedule.step()
            sums += [float(l_mu.detach()), float(l_sigma.detach())]
            bar.update()
            bar.set_postfix(L_mu=f"{sums[0] / (b + 1):.3g}", L_sigma=f"{sums[1] / (b + 1):.3g}")
        history.append({"L_mu": sums[0] / n_batches, "L_sigma": sums[1] / n_batches})
    bar.close()
    seconds = time.perf_counter() - start
    if lora is not None:
        lora.merge()
    measured = evaluate(adapter, valid_frames, valid_labels, outputs, settings.degree)
    mode = settings.trainable if isinstance(settings.trainable, str) else list(settings.trainable)
    result = {
        "gamma": gamma,
        "mode": mode,
        "trainable": names,
        "lora": None
        if lora is None
        else {"rank": settings.rank, "alpha": settings.alpha, "layers": adapt},
        "n_trained": count,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "rotations": settings.rotations,
        "augment": settings.augment,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "train_seconds": seconds,
        "scales": scales,
        "history": history,
        "evaluated_on": "train" if valid_frames is frames else "valid",
        "n_structures": len(valid_frames),
        "metrics": measured,
    }
    folder = None if out is None else pathlib.Path(out) / (name or f"gamma_{gamma:g}")
    paths = _save(module, is_mtt, result, folder) if folder is not None else {}
    for param in module.parameters():
        param.requires_grad_(True)
    return FinetuneResult(gamma, module, history, result, paths)


def _save(module, is_mtt: bool, result: dict, folder: pathlib.Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "result.json"}
    if is_mtt:
        ckpt = module.get_checkpoint()
        ckpt["best_model_state_dict"] = ckpt["model_state_dict"]
        paths["checkpoint"] = folder / "model.ckpt"
        torch.save(ckpt, paths["checkpoint"])
        paths["model"] = folder / "model.pt"
        with quiet_torchscript():
            module.export().save(str(paths["model"]))
    else:
        paths["state_dict"] = folder / "state_dict.pt"
        torch.save(module.state_dict(), paths["state_dict"])
    result["paths"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(result, indent=1))
    return paths
