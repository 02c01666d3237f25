import csv
import json
import subprocess
import sys

import pytest

from symmd.cli import main


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "symmd.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_help_of_every_subcommand():
    for args in ([], ["md"], ["diagnose"], ["training"], ["plot"]):
        out = run(*args, "--help")
        assert out.returncode == 0 and "usage: symmd" in out.stdout
    assert "--monitor-every" in run("md", "--help").stdout
    assert "--max-lambda" in run("diagnose", "--help").stdout


@pytest.mark.slow
def test_md_with_defaults_writes_a_complete_log_then_plot(tmp_path, capsys):
    log, traj, fig = tmp_path / "md.csv", tmp_path / "md.extxyz", tmp_path / "md.png"
    assert (
        main(["md", "--steps", "25", "--log", str(log), "--trajectory", str(traj), "--quiet"]) == 0
    )
    assert f"log: {log}" in capsys.readouterr().out
    rows = list(csv.DictReader(open(log)))
    assert [int(r["step"]) for r in rows] == [0, 10, 20] and float(rows[-1]["rel_forces"]) > 0
    assert main(["plot", str(log), "-o", str(fig)]) == 0 and fig.stat().st_size > 1000
    import ase.io

    assert len(ase.io.read(traj, ":")) == 3


@pytest.mark.slow
def test_md_stopped_by_the_monitor_exits_non_zero_with_one_line(tmp_path):
    out = run(
        "md",
        "--steps",
        "300",
        "--temperature",
        "20000",
        "--log",
        str(tmp_path / "hot.csv"),
        "--quiet",
    )
    assert out.returncode == 3
    lines = [line for line in out.stderr.splitlines() if line.startswith("symmd md:")]
    assert len(lines) == 1 and lines[0].startswith("symmd md: stopped: step ")


@pytest.mark.slow
def test_bad_arguments_give_one_line_errors():
    out = run("md", "--steps", "many")
    assert (
        out.returncode == 2
        and out.stderr.strip().splitlines()[-1]
        == "symmd md: error: argument --steps: invalid int value: 'many'"
    )
    out = run("md", "--model", "missing.pt")
    assert (
        out.returncode == 2
        and out.stderr.strip() == "symmd md: error: model file 'missing.pt' does not exist"
    )
    out = run("md", "--steps", "-1")
    assert (
        out.returncode == 2
        and out.stderr.strip() == "symmd md: error: --steps must be >= 0, got -1"
    )
    out = run("md", "--degree", "high")
    assert (
        out.returncode == 2
        and out.stderr.strip().splitlines()[-1]
        == "symmd md: error: argument --degree: must be an integer degree or 'auto', got 'high'"
    )
    out = run("plot", "nolog.csv", "-o", "x.png")
    assert (
        out.returncode == 2
        and "Traceback" not in out.stderr
        and out.stderr.startswith("symmd plot: error:")
    )


def test_diagnose_command_json(tmp_path, capsys):
    path = tmp_path / "d.json"
    assert main(["diagnose", "--max-lambda", "1", "--json", str(path)]) == 0
    assert "forces" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["quadrature"]["degree"] == 2 and set(data["properties"]) == {
        "energy",
        "forces",
        "stress",
        "stress[lambda=0]",
        "stress[lambda=1]",  # the raw PET's strain derivative is not symmetric
        "stress[lambda=2]",
        "feature",
        "mtt::aux::cutoff_stats",
        "mtt::aux::energy_last_layer_features",
    }


@pytest.mark.slow
def test_md_with_an_automatic_quadrature_reports_its_choice(capsys):
    code = main(
        [
            "md",
            "--steps",
            "3",
            "--symmetrize",
            "average",
            "--degree",
            "auto",
            "--tolerance",
            "1e-2",
            "--monitor-every",
            "0",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert (
        "symmd md: --degree auto chose degree " in out
        and "meets the tolerance {'forces': 0.01}" in out
    )


def test_diagnose_command_with_layers_of_a_checkpoint(pet_checkpoint, tmp_path, capsys):
    import ase.io
    from conftest import cu_cluster

    ase.io.write(tmp_path / "c.xyz", cu_cluster(5))
    assert (
        main(
            [
                "diagnose",
                str(tmp_path / "c.xyz"),
                "--model",
                pet_checkpoint,
                "--max-lambda",
                "1",
                "--properties",
                "energy",
                "--layers",
                "backend.gnn_layers.0",
                "--json",
                str(tmp_path / "d.json"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "d.json").read_text())
    assert set(data["properties"]) == {
        "energy",
        "layer:backend.gnn_layers.0[0]",
        "layer:backend.gnn_layers.0[1]",
    }
    assert "layer:backend.gnn_layers.0[1]" in capsys.readouterr().out
