"""Smoke run of benchmarks/stability.py (the full benchmark takes hours):
every mode on the analytic direct-force toy, a cluster in NVE, in a pool of
two processes; then the same command again, which finds every run done."""

import json
import pathlib
import sys

import pytest

pytest.importorskip("ipi")
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.heavy  # minutes-long check: outside CI's budget (README, Test)
def test_quick_run_of_every_mode_is_written_and_resumed(tmp_path, capsys):
    from toy_models import morse_direct

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stability

    model = tmp_path / "direct.pt"
    morse_direct().save(str(model))
    args = ["--quick", "--model", str(model), "--out", str(tmp_path), "--systems", "cluster"]
    args += ["--ensembles", "nve", "--jobs", "2"]
    assert stability.main(args) == 0
    result = json.loads((tmp_path / "stability_quick.json").read_text())
    assert (tmp_path / "stability_quick.png").stat().st_size > 10_000
    summary = result["summary"]["cluster"]["nve"]
    assert set(summary) == set(stability.MODES)
    assert all(s["seeds"] == 1 and s["failed"] == 0 for s in summary.values())
    # raw direct forces: flagged at the first step, momentum pumped
    assert summary["direct"]["first_flag_step"]["mean"] == 0
    assert {"net_force", "net_torque"} <= set(summary["direct"]["first_flag_step_per_metric"])
    assert summary["direct"]["momentum_max"]["mean"] > 1e-3
    # projected and twirled direct forces, and MTS: momentum at round-off
    for mode in ("direct+project", "direct+average2", "direct+average3", "direct+average2+project"):
        assert summary[mode]["momentum_max"]["mean"] < 1e-12, mode
        assert summary[mode]["angular_momentum_max"]["mean"] < 1e-12, mode
        assert summary[mode]["flagged"] == 0, mode
    assert summary["direct+mts"]["momentum_max"]["mean"] < 1e-6  # 8 written decimals
    cost = result["cost"]["cluster"]
    assert cost["conservative"]["vs_conservative"] == 1.0
    assert {"direct+average3", "conservative+average3"} <= set(cost)
    runs = (tmp_path / "stability_quick_runs.jsonl").read_text().splitlines()
    assert len(runs) == len(stability.MODES)
    capsys.readouterr()
    assert stability.main(args) == 0  # resumed: nothing left to run
    assert f"{len(runs)} runs, {len(runs)} already in" in capsys.readouterr().out
    assert (tmp_path / "stability_quick_runs.jsonl").read_text().splitlines() == runs
