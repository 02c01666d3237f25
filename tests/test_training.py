import functools
import json
import re

import ase.io
import numpy as np
import pytest
import torch
from helpers import cu_cluster, tiny_pet
from toy_models import lab_frame_callable

from symmd import diagnose
from symmd.cli import main
from symmd.training import diagnose_training, find_checkpoints, plot_training


def series(anisotropies):
    """Analytic stand-ins for the models of a training run: the lab-frame
    anisotropy (lambda = 2) of the energy shrinks along the series."""
    return [functools.partial(lab_frame_callable, anisotropy=a) for a in anisotropies]


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_training_view_is_the_diagnosis_of_each_model(tmp_path):
    frames = [cu_cluster(5), cu_cluster(6, seed=1)]
    run = diagnose_training(series([0.1, 0.03, 0.0]), frames, max_lambda=3, epochs=[1, 5, 10])
    assert run.epochs == [1, 5, 10] and run.names[:2] == ["energy", "forces"]
    for i, model in enumerate(series([0.1, 0.03, 0.0])):
        alone = diagnose(model, frames, max_lambda=3)
        for (lam, sigma), values in alone.properties["energy"]["spectrum"].items():
            assert run.spectrum("energy")[(lam, sigma)][i] == pytest.approx(
                np.mean(values), rel=1e-12, abs=1e-300
            )
        assert run.error("forces")[i] == pytest.approx(
            np.mean(alone.properties["forces"]["error"]), rel=1e-12
        )
    breaking = run.breaking("energy")
    assert breaking[0] > breaking[1] > 0  # less anisotropy, less weight outside (0, +1)
    # the last model keeps only the z^3 term of lab_frame_callable (lambda 1 and 3)
    assert run.spectrum("energy")[(2, 1)][2] < 1e-25
    out = run.to_dict()
    json.loads(json.dumps(out))
    assert out["epochs"] == [1, 5, 10] and len(out["diagnoses"]) == 3
    assert out["properties"]["energy"]["breaking"] == pytest.approx(breaking.tolist(), rel=1e-12)
    assert "energy" in run.table()
    other = diagnose_training(series([0.2, 0.2, 0.2]), frames, max_lambda=3, epochs=[1, 5, 10])
    plot_training({"a": run, "b": other}, tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 5000


def test_checkpoint_folders_are_sorted_by_epoch(tmp_path):
    for epoch in (10, 2, 1):
        torch.save(tiny_pet(seed=epoch).get_checkpoint(), tmp_path / f"epoch_{epoch}.ckpt")
    paths, epochs = find_checkpoints(tmp_path)
    assert epochs == [1, 2, 10] and paths[-1].endswith("epoch_10.ckpt")
    run = diagnose_training(
        tmp_path,
        cu_cluster(4),
        max_lambda=1,
        layers=["backend.gnn_layers.1"],
        properties=["energy"],
    )
    assert run.epochs == [1, 2, 10]
    assert run.names == ["energy", "layer:backend.gnn_layers.1[0]", "layer:backend.gnn_layers.1[1]"]
    # different weights, different spectra
    assert len(set(run.spectrum("layer:backend.gnn_layers.1[0]")[(1, 1)].round(12))) == 3


def test_training_errors(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"checkpoint folder {str(tmp_path / 'nope')!r} does not exist"),
    ):
        find_checkpoints(tmp_path / "nope")
    with pytest.raises(
        ValueError, match=re.escape(f"no *.ckpt or *.pt files in {str(tmp_path)!r}")
    ):
        find_checkpoints(tmp_path)
    (tmp_path / "final.pt").write_text("x")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "cannot read an epoch number from ['final.pt']; name the files like epoch_012.ckpt"
        ),
    ):
        find_checkpoints(tmp_path)
    with pytest.raises(ValueError, match=re.escape("got 1 epochs for 2 models")):
        diagnose_training(series([0.1, 0.0]), cu_cluster(4), epochs=[3])
    with pytest.raises(
        ValueError,
        match=re.escape("models is empty: pass a folder of checkpoints or a list of models"),
    ):
        diagnose_training([], cu_cluster(4))


@pytest.mark.slow  # the shipped PET on many structures: seconds
def test_training_command_writes_heatmaps_and_json(tmp_path, capsys):
    for run, seeds in (("a", (1, 2)), ("b", (3, 4))):
        folder = tmp_path / run
        folder.mkdir()
        for epoch, seed in enumerate(seeds, start=1):
            torch.save(tiny_pet(seed=seed).get_checkpoint(), folder / f"epoch_{epoch:03d}.ckpt")
    ase.io.write(tmp_path / "frames.xyz", [cu_cluster(4), cu_cluster(5, seed=3)])
    figure, data = tmp_path / "heat.png", tmp_path / "heat.json"
    code = main(
        [
            "training",
            f"first={tmp_path / 'a'}",
            str(tmp_path / "b"),
            "--structures",
            str(tmp_path / "frames.xyz"),
            "--max-lambda",
            "1",
            "--properties",
            "energy",
            "forces",
            "--layers",
            "backend.node_heads.energy.0",
            "--plot",
            str(figure),
            "--json",
            str(data),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "== first: 2 checkpoints, 2 structures" in printed and "== b: 2 checkpoints" in printed
    saved = json.loads(data.read_text())
    assert set(saved) == {"first", "b"} and saved["b"]["epochs"] == [1, 2]
    assert set(saved["first"]["properties"]) == {
        "energy",
        "forces",
        "layer:backend.node_heads.energy.0",
    }
    assert figure.stat().st_size > 5000
    assert (
        main(["training", str(tmp_path / "missing"), "--structures", str(tmp_path / "frames.xyz")])
        == 2
    )
    assert capsys.readouterr().err.startswith("symmd training: error: checkpoint folder")
