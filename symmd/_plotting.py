"""Figures: character spectra (per property) and spectra along training.

matplotlib is optional (``pip install 'symmd[plot]'``) and imported lazily,
with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["error_figure", "pyplot", "spectrum_figure", "tradeoff_figure", "training_figure"]

_FLOOR = 1e-16  # log-scale floor for exactly-zero sectors


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or ImportError with the fix."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError("plotting needs matplotlib: pip install 'symmd[plot]'") from error
    return plt


def _label(name: str, width: int = 34) -> str:
    """A short panel title: metatrain's ``backend.`` and ``mtt::aux::`` dropped."""
    name = (
        name.replace("layer:backend.", "layer ")
        .replace("layer:", "layer ")
        .replace("mtt::aux::", "")
    )
    return name if len(name) <= width else name[: width - 3] + "..."


def _grid(n: int, max_columns: int = 4):
    columns = min(n, max_columns)
    return math.ceil(n / columns), columns


def spectrum_figure(spectra: dict, max_lambda: int, path, title: str = ""):
    """One panel per property: the normalized spectrum against lambda, the
    mean over structures as a thick line and every structure as a faint one;
    sigma = +1 solid blue, sigma = -1 dashed red; log scale; the weight above
    ``max_lambda`` (key ``"above"``, if given) as a grey square at
    ``max_lambda + 1``. Returns the figure (closed, data intact).

    ``spectra[name] = {(lam, sigma): array [S], "above": array [S]}``.
    """
    plt = pyplot()
    names = list(spectra)
    rows, columns = _grid(len(names))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.9 * rows), squeeze=False)
    lams = np.arange(max_lambda + 1)
    for ax, name in zip(axes.flat, names):
        spec = spectra[name]
        for sigma, style, color in ((1, "-", "C0"), (-1, "--", "C3")):
            values = np.array([spec[(lam, sigma)] for lam in lams]).clip(_FLOOR)  # [lam, S]
            if values.shape[1] > 1:
                ax.plot(lams, values, style, color=color, alpha=0.15, lw=0.8)
            ax.plot(
                lams,
                values.mean(axis=1),
                style,
                color=color,
                lw=2,
                marker="o",
                ms=3,
                label="polar (σ=+1)" if sigma > 0 else "axial (σ=-1)",
            )
        if "above" in spec:
            above = np.asarray(spec["above"]).clip(_FLOOR)
            ax.plot(
                [max_lambda + 1], [above.mean()], "s", color="0.5", ms=5, label=f"λ > {max_lambda}"
            )
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(_FLOOR, ax.get_ylim()[0]), top=1.5)
        ax.set_title(_label(name), fontsize=9)
        ax.set_xlabel("λ")
        ax.set_xticks(list(lams) + ([max_lambda + 1] if "above" in spec else []))
        ax.set_xticklabels(
            [str(lam) for lam in lams] + ([f">{max_lambda}"] if "above" in spec else [])
        )
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    return _finish(fig, axes[0][0], "B_λσ / <|u|²>", path, title)


def error_figure(data: dict, units: dict, path, title: str = ""):
    """One panel per output: log-spaced histograms of the model's absolute
    error and of the equivariance error A (the paper's Fig. 2, top), medians
    as dashed vertical lines. ``data[name] = (abs_error [n], A [n])``.
    Returns the figure (closed, data intact)."""
    plt = pyplot()
    names = list(data)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 2.9), squeeze=False)
    for ax, name in zip(axes[0], names):
        model, equiv = (np.asarray(x, dtype=float) for x in data[name])
        both = np.concatenate([model, equiv])
        positive = both[both > 0]
        low, high = (positive.min(), positive.max()) if len(positive) else (1e-8, 1.0)
        bins = np.logspace(np.log10(low) - 0.1, np.log10(high) + 0.1, 30)
        for values, color, label in ((model, "C0", "|model - label|"), (equiv, "C1", "A")):
            ax.hist(values.clip(bins[0]), bins=bins, color=color, alpha=0.5, label=label)
            ax.axvline(float(np.median(values)), color=color, ls="--", lw=1.5)
        ax.set_xscale("log")
        ax.set_title(_label(name), fontsize=9)
        ax.set_xlabel(f"error ({units.get(name) or 'output units'})")
    return _finish(fig, axes[0][0], "count", path, title)


def _finish(fig, first_axis, ylabel: str, path, title: str):
    """Label and legend on the first panel, title, layout, save, close; the
    figure is returned (closed, its data intact)."""
    first_axis.set_ylabel(ylabel)
    first_axis.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return fig


def training_figure(
    runs: dict, names: Sequence[str], max_lambda: int, path, title: str = ""
) -> None:
    """Heatmaps of the spectrum along training: one row per run, one column
    per property or layer; x the epoch, y lambda (both parities, sigma = -1
    rows marked with a prime), colour the mean fraction on a log scale. With
    exactly two runs over the same epochs, a last row shows
    log10(second / first) per sector and epoch (red: more weight in the
    second run).

    ``runs[label] = (epochs [E], {name: {(lam, sigma): array [E]}})``.
    """
    plt = pyplot()
    from matplotlib.colors import LogNorm

    labels = list(runs)
    compare = len(labels) == 2 and list(runs[labels[0]][0]) == list(runs[labels[1]][0])
    rows, columns = len(runs) + compare, len(names)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.5 * columns + 1.2, 2.5 * rows + 0.4), squeeze=False, sharey=True
    )
    sectors = [(lam, sigma) for lam in range(max_lambda + 1) for sigma in (1, -1)]
    ylabels = [f"{lam}" + ("" if sigma > 0 else "'") for lam, sigma in sectors]

    def grid(label, name):
        return np.array([runs[label][1][name][b] for b in sectors]).clip(_FLOOR)  # [sectors, E]

    def draw(ax, values, epochs, **style):
        image = ax.imshow(
            values,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            extent=(-0.5, len(epochs) - 0.5, -0.5, len(sectors) - 0.5),
            **style,
        )
        ax.set_xticks(range(len(epochs)))
        ax.set_xticklabels([str(e) for e in epochs], fontsize=6, rotation=90)
        return image

    image = ratio_image = None
    for c, name in enumerate(names):
        for r, label in enumerate(labels):
            ax, (epochs, spectra) = axes[r][c], runs[label]
            if name not in spectra:
                ax.axis("off")
                continue
            image = draw(
                ax, grid(label, name), epochs, norm=LogNorm(vmin=1e-8, vmax=1.0), cmap="magma"
            )
        if compare and all(name in runs[k][1] for k in labels):
            ratio = np.log10(grid(labels[1], name) / grid(labels[0], name))
            ratio_image = draw(
                axes[-1][c], ratio, runs[labels[0]][0], vmin=-1.5, vmax=1.5, cmap="RdBu_r"
            )
        elif compare:
            axes[-1][c].axis("off")
        axes[0][c].set_title(_label(name, 28), fontsize=8)
        axes[-1][c].set_xlabel("epoch", fontsize=8)
    row_labels = labels + ([f"log10 {labels[1]}/{labels[0]}"] if compare else [])
    for r, label in enumerate(row_labels):
        axes[r][0].set_ylabel(f"{label}\nλ (' = axial)", fontsize=8)
        axes[r][0].set_yticks(range(len(sectors)))
        axes[r][0].set_yticklabels(ylabels, fontsize=6)
    if image is not None:
        fig.colorbar(image, ax=axes[: len(labels)].ravel().tolist(), shrink=0.8, label="B_λσ / Σ B")
    if ratio_image is not None:
        fig.colorbar(ratio_image, ax=axes[-1].ravel().tolist(), shrink=0.8, label="log10 ratio")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def tradeoff_figure(runs: Sequence[dict], path) -> None:
    """The model error (x, held-out MAE) against the equivariance error
    (y, A rms) of every output, one marker per fine-tuning ``gamma``,
    coloured by gamma, log axes (arXiv 2603.24638, Fig. 5).

    ``runs``: the ``result.json`` contents of :func:`symmd.finetune`.
    """
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    names = [n for n in runs[0]["metrics"] if isinstance(runs[0]["metrics"][n], dict)]
    names = [n for n in names if "mae" in runs[0]["metrics"][n]]
    rows, columns = _grid(max(1, len(names)), 3)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.4 * rows), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(runs)))
    for ax, name in zip(axes.flat, names):
        key = "A_per_atom_rms" if name == "energy" else "A_rms"
        x = [max(r["metrics"][name]["mae"], _FLOOR) for r in runs]
        y = [max(r["metrics"][name][key], _FLOOR) for r in runs]
        ax.plot(x, y, "-", color="0.7", lw=0.8, zorder=1)
        for xi, yi, color, run in zip(x, y, colors, runs):
            ax.scatter(xi, yi, color=color, s=36, zorder=2, label=f"gamma = {run['gamma']:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 1, 2, 5 per decade, plain numbers
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        unit = "eV/atom" if name == "energy" else ("eV/A^3" if "stress" in name else "eV/A")
        ax.set_xlabel(f"model error: MAE ({unit})")
        ax.set_ylabel(f"equivariance error A ({unit})")
        ax.set_title(_label(name))
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
