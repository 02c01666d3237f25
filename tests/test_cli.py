import argparse
import csv
import json
import re
import subprocess
import sys

import pytest
import torch

from symmd.cli import main


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "symmd.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_help_of_every_subcommand():
    helps = {}
    for args in ([], ["md"], ["diagnose"], ["training"], ["plot"]):
        out = run(*args, "--help")
        assert out.returncode == 0 and "usage: symmd" in out.stdout
        helps[tuple(args)] = out.stdout
    assert "--monitor-every" in helps[("md",)]
    assert "--max-lambda" in helps[("diagnose",)]


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
        and out.stderr.strip()
        == "symmd md: error: argument --steps: must be an integer >= 0, got 'many'"
    )
    out = run("md", "--model", "missing.pt")
    assert (
        out.returncode == 2
        and out.stderr.strip() == "symmd md: error: model file 'missing.pt' does not exist"
    )
    out = run("md", "--steps", "-1")
    assert (
        out.returncode == 2
        and out.stderr.strip()
        == "symmd md: error: argument --steps: must be an integer >= 0, got '-1'"
    )
    out = run("md", "--degree", "high")
    assert (
        out.returncode == 2
        and out.stderr.strip()
        == "symmd md: error: argument --degree: must be an integer degree or 'auto', got 'high'"
    )
    out = run("plot", "nolog.csv", "-o", "x.png")
    assert (
        out.returncode == 2
        and "Traceback" not in out.stderr
        and out.stderr.startswith("symmd plot: error:")
    )


@pytest.mark.slow  # whole commands on the shipped PET: seconds
def test_diagnose_command_json(tmp_path, capsys):
    path = tmp_path / "d.json"
    assert main(["diagnose", "--max-lambda", "1", "--json", str(path)]) == 0
    assert "forces" in capsys.readouterr().out
    data = json.loads(path.read_text())
    # metatrain's internal mtt::aux::* outputs are left out unless asked for
    assert data["quadrature"]["degree"] == 2 and set(data["properties"]) == {
        "energy",
        "forces",
        "stress",
        "stress[lambda=0]",
        "stress[lambda=1]",  # the raw PET's strain derivative is not symmetric
        "stress[lambda=2]",
        "feature",
    }


@pytest.mark.slow
def test_md_with_an_automatic_quadrature_reports_its_choice(tmp_path, capsys):
    code = main(
        [
            "md",
            "--log",
            str(tmp_path / "auto.csv"),
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


@pytest.mark.slow  # whole commands on a checkpoint: seconds
def test_diagnose_command_with_layers_of_a_checkpoint(pet_checkpoint, tmp_path, capsys):
    import ase.io
    from helpers import cu_cluster

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


# -- issue 17: what a chemist hits in the first hour ---------------------------


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--timestep", "0"], "argument --timestep: must be a number > 0, got '0'"),
        (["--timestep", "-2"], "argument --timestep: must be a number > 0, got '-2'"),
        (["--timestep", "nan"], "argument --timestep: must be a number > 0, got 'nan'"),
        (["--temperature", "-1"], "argument --temperature: must be a number >= 0, got '-1'"),
        (["--friction", "0"], "argument --friction: must be a number > 0, got '0'"),
        (["--friction", "-0.1"], "argument --friction: must be a number > 0, got '-0.1'"),
        (["--steps", "2.5"], "argument --steps: must be an integer >= 0, got '2.5'"),
        (["--monitor-every", "-1"], "argument --monitor-every: must be an integer >= 0, got '-1'"),
        (
            ["--trajectory-every", "0"],
            "argument --trajectory-every: must be an integer > 0, got '0'",
        ),
        (["--threads", "0"], "argument --threads: must be an integer > 0, got '0'"),
        (["--max-copies", "-5"], "argument --max-copies: must be an integer >= 0, got '-5'"),
        (["--degree", "-1"], "argument --degree: must be an integer degree or 'auto', got '-1'"),
        (["--tolerance", "0"], "argument --tolerance: must be a number > 0, got '0'"),
        (
            ["--ensemble", "nve", "--friction", "0.1"],
            "--friction applies to --ensemble langevin only",
        ),
        (
            ["--model", "pet-emt-cuall"],
            "--model 'pet-emt-cuall' is neither a file nor a shipped model; shipped models: "
            "pet-emt-cu-cluster, pet-emt-cual, pet-emt-cual-direct (see `symmd models`)",
        ),
        (
            ["--device", "gpu0"],
            "--device 'gpu0' is not a torch device; use cpu, cuda, cuda:N or mps",
        ),
    ],
)
def test_md_arguments_are_validated_with_one_line_errors(args, message, tmp_path, capsys):
    try:
        code = main(["md", *args, "--log", str(tmp_path / "x.csv"), "--quiet"])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert one_line(capsys) == f"symmd md: error: {message}"
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(capsys):
    assert main(["md", "--device", "cuda", "--quiet"]) == 2
    build = ", a CPU-only build" if torch.version.cuda is None else ", no GPU visible"
    assert one_line(capsys) == (
        f"symmd md: error: --device cuda: CUDA is not available here (torch "
        f"{torch.__version__}{build}); use --device cpu"
    )


def test_empty_and_unreadable_structure_files_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert main(["md", str(empty), "--quiet"]) == 2
    assert one_line(capsys) == f"symmd md: error: structure file {str(empty)!r} is empty"
    assert main(["diagnose", str(empty)]) == 2
    assert one_line(capsys) == f"symmd diagnose: error: structure file {str(empty)!r} is empty"
    assert main(["md", str(tmp_path / "none.xyz"), "--quiet"]) == 2
    missing = str(tmp_path / "none.xyz")
    assert one_line(capsys) == f"symmd md: error: structure file {missing!r} does not exist"


@pytest.mark.slow  # whole commands on the shipped PET: seconds
def test_a_huge_rule_is_refused_unless_allowed(tmp_path, capsys):
    args = ["md", "--symmetrize", "average", "--degree", "100", "--steps", "1", "--quiet"]
    assert main([*args, "--log", str(tmp_path / "a.csv")]) == 2
    err = one_line(capsys)
    assert err.startswith(
        "symmd md: error: the quadrature 'lebedev101x101+inversion' has 700940 rotated copies, "
        "more than max_copies=5000 (roughly "
    )
    assert err.endswith("lower the degree, or pass --max-copies 0 to allow it")
    # allowed explicitly, the rule is built (and the run would start)
    from symmd import SymmetryCalculator, models

    calc = SymmetryCalculator(
        models.shipped_model(), symmetrize="average", quadrature=100, max_copies=None
    )
    assert len(calc.quadrature) == 700940


def test_version_and_shipped_models(capsys):
    from importlib.metadata import version

    import symmd
    from symmd.models import SHIPPED_MODELS

    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == (
        f"symmd {symmd.__version__} (torch {version('torch')}, ase {version('ase')}, "
        f"metatomic-torch {version('metatomic-torch')})"
    )
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{name:<22}{desc}" for name, (_, desc) in SHIPPED_MODELS.items()]


def test_every_option_has_help():
    from symmd.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"symmd {name} {action.dest} has no help"
    md_help = subparsers.choices["md"].format_help()
    for text in ("--symmetrize", "adaptive", "1/fs", "--overwrite", "--max-copies", "--threads"):
        assert text in md_help


def test_friction_is_converted_from_inverse_fs_to_ase_units():
    import numpy as np
    from ase import units

    from symmd._md_command import default_structure, langevin

    dyn = langevin(default_structure(), 2.0, 300.0, 0.02, np.random.default_rng(0))
    assert dyn.fr == pytest.approx(0.02 / units.fs, rel=1e-12)
    assert dyn.dt == pytest.approx(2.0 * units.fs, rel=1e-12)
    assert not dyn.fix_com


@pytest.mark.slow
def test_an_existing_log_is_kept_and_overwrite_replaces_it(tmp_path, capsys):
    log = tmp_path / "md.csv"
    log.write_text("precious\n")
    assert main(["md", "--steps", "2", "--log", str(log), "--quiet"]) == 0
    out = capsys.readouterr().out
    other = tmp_path / "md.1.csv"
    assert f"symmd md: {log} exists; this run logs to {other} (--overwrite replaces)" in out
    assert out.strip().endswith(f"; log: {other}")
    assert log.read_text() == "precious\n"
    assert len(list(csv.DictReader(open(other)))) == 1
    # a failing run does not destroy it either
    assert main(["md", "--degree", "100", "--symmetrize", "average", "--log", str(log)]) == 2
    assert log.read_text() == "precious\n"
    assert main(["md", "--steps", "2", "--log", str(log), "--overwrite", "--quiet"]) == 0
    assert log.read_text().startswith("step,time_fs,")


@pytest.mark.slow  # whole commands on the shipped PET: seconds
def test_monitor_every_zero_keeps_the_physical_checks(tmp_path, capsys):
    args = ["md", "--steps", "300", "--temperature", "20000", "--monitor-every", "0", "--quiet"]
    assert main([*args, "--log", str(tmp_path / "m.csv")]) == 3
    err = one_line(capsys)
    assert err.startswith("symmd md: stopped: step ") and "min_distance = " in err
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert rows and all(r["rel_forces"] == "" for r in rows)


@pytest.mark.slow  # whole commands on the shipped PET: seconds
def test_stop_message_names_the_last_good_frame_and_the_log(tmp_path, capsys):
    log = tmp_path / "hot.csv"
    args = ["md", "--steps", "300", "--temperature", "20000", "--quiet", "--log", str(log)]
    assert main(args) == 3
    err = one_line(capsys)
    good = f"{log}.last_good.extxyz"
    assert re.fullmatch(
        r"symmd md: stopped: step \d+: .+; last good frame: "
        + re.escape(good)
        + "; log: "
        + re.escape(str(log)),
        err,
    ), err
    import ase.io

    assert len(ase.io.read(good)) == 32


@pytest.mark.slow
def test_adaptive_switches_before_the_action_applies(tmp_path, capsys):
    """Default --action raise: the first flag switches to averaging; the run stops
    only when a flag persists while averaging, and says which metric."""
    log = tmp_path / "ad.csv"
    args = ["md", "--symmetrize", "adaptive", "--degree", "1", "--temperature", "20000"]
    code = main([*args, "--steps", "300", "--quiet", "--log", str(log)])
    rows = list(csv.DictReader(open(log)))
    switches = [r for r in rows if r["flags"].startswith("switch")]
    assert switches and switches[0]["flags"] == "switch:none->average"
    if code == 3:
        err = one_line(capsys)
        assert "stopped: step " in err
        step = int(re.match(r"symmd md: stopped: step (\d+)", err).group(1))
        assert step > int(switches[0]["step"])


@pytest.mark.slow
def test_multi_frame_input_uses_the_first_frame_and_says_so(tmp_path, capsys):
    import ase.io
    from helpers import cual_cell

    frames = [cual_cell(seed=1), cual_cell((1, 1, 1), seed=2)]
    path = tmp_path / "two.xyz"
    ase.io.write(path, frames)
    log = tmp_path / "f.csv"
    assert main(["md", str(path), "--steps", "1", "--quiet", "--log", str(log)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"symmd md: note: {path} holds several frames; using the first (choose another "
        "with --index)"
    )
    assert (
        main(["md", str(path), "--index", "1", "--steps", "1", "--quiet", "--log", str(log)]) == 0
    )
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_md_on_a_slab_file(tmp_path, capsys):
    import ase.build
    import ase.io

    slab = ase.build.fcc111("Cu", (2, 2, 3), vacuum=10)
    slab.numbers[[1, 5]] = 13
    ase.io.write(tmp_path / "slab.xyz", slab)
    for mode in ("none", "project", "average"):
        log = tmp_path / f"{mode}.csv"
        args = ["md", str(tmp_path / "slab.xyz"), "--steps", "3", "--symmetrize", mode]
        assert main([*args, "--degree", "1", "--quiet", "--log", str(log)]) == 0, mode
        assert "3 steps done" in capsys.readouterr().out


def test_plot_uses_the_time_axis_and_marks_switches(tmp_path):
    """A log with time_fs: the switch at step 304 (608 fs with a 2 fs step) is
    drawn at 608 on the time axis, including for a row that lacks time_fs."""
    pytest.importorskip("matplotlib")
    from symmd._logplot import _x_of, read_log
    from symmd.monitor import LOG_FIELDS

    log = tmp_path / "t.csv"
    with open(log, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        writer.writeheader()
        for step in range(0, 400, 10):
            writer.writerow(
                {"step": step, "time_fs": 2.0 * step, "mode": "none", "temperature": 300,
                 "epot": -1, "etot": -0.5, "rel_forces": 0.01, "flags": ""}
            )  # fmt: skip
        writer.writerow({"step": 304, "time_fs": 608.0, "flags": "switch:none->average"})
        writer.writerow({"step": 306, "time_fs": "", "flags": "min_distance"})
    rows = read_log(str(log))
    x, label = _x_of(rows)
    assert label == "time (fs)"
    assert [x(r) for r in rows[-2:]] == [608.0, 612.0]
    fig = tmp_path / "t.png"
    assert main(["plot", str(log), "-o", str(fig)]) == 0 and fig.stat().st_size > 1000


def test_plot_refuses_a_csv_that_is_not_a_symmd_log(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["plot", str(other), "-o", str(tmp_path / "o.png")]) == 2
    assert one_line(capsys) == (
        f"symmd plot: error: {str(other)!r} is not a symmd monitor log: it lacks the columns "
        "['step', 'time_fs', 'mode', 'temperature', 'rel_forces', 'flags'] (its header is "
        "['a', 'b']); write one with `symmd md --log` or Monitor(log=...)"
    )
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_sigint_ends_with_one_line_and_a_complete_log(tmp_path):
    import os
    import pathlib
    import signal
    import time

    root = pathlib.Path(__file__).resolve().parent.parent
    log = tmp_path / "int.csv"
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "symmd.cli",
            "md",
            "--steps",
            "100000",
            "--quiet",
            "--log",
            str(log),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(
        rf"symmd md: interrupted at step \d+; log complete: {re.escape(str(log))}", lines[0]
    )
    text = log.read_text()
    assert text.endswith("\n")
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) >= 3 and all(len(r) == len(rows[0]) and None not in r for r in rows)
    step = int(re.search(r"step (\d+)", lines[0]).group(1))
    assert int(rows[-1]["step"]) <= step


def test_training_with_an_empty_structure_file_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert main(["training", str(tmp_path), "--structures", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err == f"symmd training: error: structure file {str(empty)!r} is empty\n"


def test_md_with_direct_forces_stops_raw_and_runs_projected(tmp_path, capsys):
    """--non-conservative on a model with direct outputs: raw, the monitor
    stops at the first step on the net force (and says the CLI fix); with
    --symmetrize project the run completes and logs the conservation columns."""
    import ase.io
    from helpers import cu_cluster
    from toy_models import morse_direct

    model, structure = tmp_path / "direct.pt", tmp_path / "cluster.xyz"
    morse_direct().save(str(model))
    ase.io.write(structure, cu_cluster(19))
    common = ["md", str(structure), "--model", str(model), "--non-conservative", "--quiet"]
    common += ["--ensemble", "nve", "--timestep", "1", "--monitor-every", "5"]
    assert main([*common, "--steps", "10", "--log", str(tmp_path / "raw.csv")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("symmd md: stopped: step 0: net_force = ")
    assert "; --symmetrize project removes it (also: net_torque)" in err
    log = tmp_path / "project.csv"
    assert main([*common, "--steps", "10", "--symmetrize", "project", "--log", str(log)]) == 0
    rows = list(csv.DictReader(open(log)))
    assert [int(r["step"]) for r in rows] == [0, 5, 10] and not any(r["flags"] for r in rows)
    assert all(float(r["net_force"]) < 1e-12 and float(r["momentum"]) < 1e-9 for r in rows)
    assert all(float(r["net_torque"]) < 1e-12 and float(r["angular_momentum"]) < 1e-9 for r in rows)
    assert main(["md", "--non-conservative", "--steps", "1", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "symmd md: error: non_conservative=True but the model has no "
        "'non_conservative_force(s)' output; its outputs are ['energy', 'feature', 'features', "
        "'mtt::aux::cutoff_stats', 'mtt::aux::energy_last_layer_features']; "
        "drop --non-conservative"
    )
