"""The README's Quickstart runs as pasted (with fewer MD steps), in a fresh
directory, without warnings that symmd causes."""

import pathlib
import re
import warnings

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the Quickstart has no python block"
    return match.group(1)


def test_quickstart_defines_everything_it_uses():
    code = quickstart()
    assert "atoms = " in code and code.index("atoms = ") < code.index("atoms.calc")
    assert re.search(r"\.run\(1000\)", code)
    assert "friction=0.02 / units.fs" in code


@pytest.mark.slow
def test_quickstart_runs_as_pasted(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    code = quickstart()
    code, n = re.subn(r"\.run\(1000\)", ".run(12)", code)
    assert n == 1
    monkeypatch.chdir(tmp_path)
    (tmp_path / "md.csv").write_text("an older log\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README.md", "exec"), {"__name__": "__quickstart__"})
    out = capsys.readouterr().out
    assert "log: md.1.csv" in out  # the existing md.csv is kept
    assert (tmp_path / "md.csv").read_text() == "an older log\n"
    assert len((tmp_path / "md.1.csv").read_text().splitlines()) == 3  # header + steps 0, 10
    assert (tmp_path / "spectrum.png").stat().st_size > 1000
    assert "columns 'l+'/'l-'" in out and " unit " in out
    noisy = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not noisy, [f"{w.category.__name__}: {w.message} ({w.filename})" for w in noisy]
