"""The rank entry point, ``python -m runtime`` (what torchrun starts): its output paths.

``--out``, ``--trace`` and ``--steps-log`` follow every command's rule
(:func:`pipesim.util.output_path`): a missing folder is made only under the current one.
Each rank checks them on its argv before ``init_process_group``, so a refused path stops
every rank, with the same line, before any of them starts work.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import runtime.engine  # noqa: E402
from runtime.__main__ import main  # noqa: E402
from runtime.launch import LaunchError, run_local  # noqa: E402

BASE = ["--model", "tiny", "--schedule", "gpipe", "--batch-size", "4", "--micro-batch-size", "2", "--warmup", "1",
        "--steps", "1", "--op-timeout", "30"]


@pytest.fixture
def started(monkeypatch, tmp_path):
    """Run from an empty folder of its own; record the configurations run_rank was started with."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    calls: list = []
    monkeypatch.setattr(runtime.engine, "run_rank", calls.append)
    return calls


@pytest.mark.parametrize("flag,name", [("--out", "r.json"), ("--trace", "trace"), ("--steps-log", "steps.jsonl")])
def test_a_missing_folder_outside_the_current_one_is_refused_before_the_rank_starts(tmp_path, capsys, started,
                                                                                     flag, name):
    elsewhere = tmp_path / "elsewhere" / "deeper"
    assert main([*BASE, flag, str(elsewhere / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"python -m runtime: error: {flag}: folder {elsewhere} does not exist; create it first "
                   "(only folders under the current one are created)"), err
    assert started == []                                # run_rank (init_process_group, the steps) never ran
    assert not (tmp_path / "elsewhere").exists()        # and nothing was made


def test_a_missing_folder_under_the_current_one_is_made(tmp_path, capsys, started):
    assert main([*BASE, "--out", "new/r.json", "--steps-log", "new/logs/steps.jsonl",
                 "--trace", str(tmp_path / "trace")]) == 0   # an existing folder elsewhere is fine
    assert (tmp_path / "cwd" / "new" / "logs").is_dir()
    assert "created folder new/logs for --steps-log" in capsys.readouterr().err
    assert [(c.out, c.steps_log, c.trace) for c in started] == [("new/r.json", "new/logs/steps.jsonl",
                                                                 str(tmp_path / "trace"))]


def test_every_launched_rank_refuses_with_the_same_line(tmp_path, monkeypatch):
    """Two real rank processes, as torchrun starts them: both exit 2 before the process group."""
    monkeypatch.chdir(tmp_path)
    log_dir = tmp_path / "logs"
    bad = tmp_path.parent / f"{tmp_path.name}-nowhere" / "steps.jsonl"   # outside the ranks' current folder
    with pytest.raises(LaunchError) as ei:
        run_local("runtime", [*BASE, "--steps-log", str(bad)], 2, timeout_s=120, log_dir=log_dir, echo=False)
    assert ei.value.returncode == 2, str(ei.value)
    line = (f"python -m runtime: error: --steps-log: folder {bad.parent} does not exist; create it first "
            "(only folders under the current one are created)")
    logs = sorted(log_dir.glob("rank*.log"))
    assert len(logs) == 2
    for log in logs:
        assert line in log.read_text().splitlines(), (log, log.read_text())
        assert "step 0" not in log.read_text()
    assert not bad.parent.exists()
