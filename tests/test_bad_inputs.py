"""Malformed inputs a new user tried (issue 13): each gets one line on stderr that names the
argument or field and what is accepted, exit status 2, and never a traceback or a runaway run.

Run in-process through ``loop.cli.main`` (fast); the ``run`` and ``calibrate`` rows stop
before any process starts.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid

import pytest

from loop.cli import main
from tests.helpers import uniform_profile

# A folder that does not exist, unique to this run: a fixed one (it was /nonexistent-pipesim-dir/sub) is
# shared by everyone on the machine, and once anything had made it, the refusals below really ran.
NOWHERE = f"/nonexistent-pipesim-dir-{uuid.uuid4().hex[:12]}/sub"
SIM = ["simulate", "--schedule", "gpipe", "--micro-batch-size", "1", "--batch-size", "4"]


def _net(setting: str) -> list[str]:
    return SIM + ["--network", setting]


def _check(capsys, argv, named: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("created folder")]
    assert len(lines) == 1, err
    assert named in lines[0], lines[0]
    assert "nan s" not in out
    return lines[0]


SIMULATE_CASES = [
    # runaway sizes: refused before starting, naming the flag and its range, or the size asked for
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "1", "--batch-size", "99999999999999999999"],
     "--batch-size must be an integer >= 1"),
    (SIM + ["--steps", "100000000"], "--steps must be an integer >= 1 and <= 10000"),
    (SIM + ["--steps", "0"], "--steps must be"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "1", "--batch-size", str(2 ** 30)],
     "at most 50,000,000"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "0", "--batch-size", "4"], "--micro-batch-size must be"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "-1", "--batch-size", "4"], "--micro-batch-size must be"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "3", "--batch-size", "4"], "not a multiple"),
    # network settings that change nothing, or name links the pipeline does not have
    (_net(";"), "empty clause"),
    (_net(";;;"), "empty clause"),
    (_net("delay 1ms;"), "empty clause"),
    (_net("link 5-9 delay 1ms"), "names link 5-9, but there are stages 0..2 only"),
    (_net("link 0-9 delay 1ms"), "names link 0-9, but there are stages 0..2 only"),
    (_net("link 2->3 delay 1ms"), "names link 2->3, but there are stages 0..2 only"),
    (_net("link 0-2 delay 1ms"), "only neighbour links"),
    # absurd values: checked after unit conversion, long ones cut
    (_net("delay " + "9" * 3000 + "ms"), "delay must be a number >= 0 and <= 3600 s"),
    (_net("delay 99999999999999999999999999999ms"), "delay must be a number >= 0 and <= 3600 s"),
    (_net("delay 1e400 ms"), "delay must be"),
    (_net("delay nan s"), "cannot read delay"),
    (_net("delay -5ms"), "delay must be"),
    (_net("bandwidth 1bps"), "bandwidth must be a number >= 1000 and <= 1e15 bit/s"),
    (_net("bandwidth 0.5kbps"), "bandwidth must be"),
    (_net("bandwidth 2GBPS"), "case-sensitive"),
    (_net("bandwidth 1Gbps bandwidth 2Gbps"), "given twice"),
    (_net("latency 5ms"), "unknown word"),
    (_net("seed"), "names a grid"),
    (_net(""), "empty"),
    (SIM + ["--recv-ahead", "-5"], "--recv-ahead"),
    # argparse's own errors, one line too
    (SIM + ["--steps", "x"], "argument --steps: invalid int value"),
    (["simulate", "--schedule", "zb", "--micro-batch-size", "1", "--batch-size", "4"], "argument --schedule"),
    (["simulate", "--micro-batch-size", "1", "--batch-size", "4"], "--schedule"),
    (["nosuchverb"], "invalid choice"),
]


@pytest.mark.parametrize("argv,named", SIMULATE_CASES, ids=[f"{i}-{' '.join(a[6:])[:40]}" for i, (a, _) in
                                                              enumerate(SIMULATE_CASES)])
def test_simulate_refuses(capsys, argv, named):
    _check(capsys, argv, named)


GRID_CASES = [
    (["grid", "--batch-size", "99999999999999999999"], "--batch-size must be"),
    (["grid", "--micro-batch-sizes", "1", "--batch-size", str(2 ** 24)], "at most 50,000,000"),
    (["grid", "--micro-batch-sizes", "1,2", "--batch-size", "400000"], "this grid would run 40 simulations"),
    (["grid", "--micro-batch-sizes", "1,3"], "not a multiple of --micro-batch-sizes 3"),
    (["grid", "--micro-batch-sizes", "0"], "--micro-batch-sizes"),
    (["grid", "--network", ","], "empty"),
    (["grid", "--network", "delay 1ms,"], "empty setting"),
    (["grid", "--network", "delay 1ms, ;"], "empty clause"),
    (["grid", "--network", "default, link 0-2 delay 1ms"], "only neighbour links"),
    (["grid", "--network", "default, link 0-9 delay 1ms"], "stages 0..2 only"),
    (["grid", "--network", "delay 1ms, bandwidth 10bps"], "bandwidth must be"),
    (["grid", "--csv", NOWHERE + "/g.csv"], f"--csv: folder {NOWHERE} does not exist"),
    (["grid", "--json", NOWHERE + "/g.json"], "--json: folder"),
]


@pytest.mark.parametrize("argv,named", GRID_CASES, ids=[f"{i}" for i in range(len(GRID_CASES))])
def test_grid_refuses(capsys, argv, named):
    _check(capsys, argv, named)


def _profile_file(tmp_path, mutate=None, text=None):
    path = tmp_path / "p.json"
    doc = uniform_profile(3, latency=1e-4, bandwidth=1e10, nbytes=1000).to_json()
    if mutate:
        mutate(doc)
    path.write_text(text if text is not None else json.dumps(doc))
    return str(path)


def _set_forward(v):
    def f(doc):
        doc["stages"][0]["compute"]["1"]["forward_s"] = v
    return f


def test_output_and_profile_paths(capsys, tmp_path):
    _check(capsys, SIM + ["--trace", NOWHERE + "/t.json"], f"--trace: folder {NOWHERE} does not exist")
    _check(capsys, SIM + ["--trace", str(tmp_path)], "--trace: ")  # a folder, not a file
    _check(capsys, SIM + ["--profile", str(tmp_path)], "is a folder; name a profile file")
    _check(capsys, SIM + ["--profile", str(tmp_path / "missing.json")], "no such profile")
    _check(capsys, SIM + ["--profile", _profile_file(tmp_path, text="[" * 100_000 + "]" * 100_000)],
           "nested too deeply")
    _check(capsys, SIM + ["--profile", _profile_file(tmp_path, text="{")], "not valid JSON")
    # a misspelt top-level field: one line naming the file, the field and the fields allowed
    line = _check(capsys, SIM + ["--profile", _profile_file(tmp_path, lambda d: d.update(stagse=d.pop("stages")))],
                  "unknown top-level field 'stagse' (known: ")
    assert str(tmp_path / "p.json") in line and "stages, links" in line, line
    # a number too large for a float, as a JSON integer: the reader's range, or the command's last resort
    line = _check(capsys, SIM + ["--profile", _profile_file(tmp_path, _set_forward(10 ** 400))], "")
    assert "forward_s" in line or "too large" in line, line
    # times beyond any real run: refused (by the reader's range or the simulator's result check), naming the field
    _check(capsys, SIM + ["--profile", _profile_file(tmp_path, _set_forward(1e300))], "forward_s")
    _check(capsys, ["grid", "--profile", _profile_file(tmp_path, _set_forward(1e300)), "--micro-batch-sizes", "1",
                    "--batch-size", "4"], "forward_s")


# measured files for compare: a stages_per_rank for a schedule that runs one stage per rank is refused
# (it used to be dropped without a word), naming the file, the line and the schedule; 1 is accepted
JSONL_REC = {"key": "k", "run": 0, "schedule": "gpipe", "network": "default", "micro_batch_size": 1,
             "batch_size": 4, "median": 1.0, "p10": 0.9, "p90": 1.1}
ONE_STAGE = "which runs one stage per rank; leave it out or write 1 (several stages per rank: interleaved1f1b)"
MEASURED_CASES = [
    ("m.jsonl", [JSONL_REC, {**JSONL_REC, "schedule": "1f1b", "stages_per_rank": 2}],
     "m.jsonl, line 2, stages_per_rank: 2 stages per rank given for 1f1b, " + ONE_STAGE),
    ("m.jsonl", [{**JSONL_REC, "schedule": "zbh1", "stages_per_rank": "3"}],
     "m.jsonl, line 1, stages_per_rank: 3 stages per rank given for zbh1, " + ONE_STAGE),
    ("m.jsonl", [{**JSONL_REC, "schedule": "interleaved1f1b", "stages_per_rank": 0}],
     "m.jsonl, line 1, stages_per_rank: 0 is not a positive integer"),
    ("m.jsonl", [{**JSONL_REC, "schedule": "interleaved1f1b", "stages_per_rank": 2.5}],
     "m.jsonl, line 1, stages_per_rank: 2.5 is not a positive integer"),
    ("r/results.json", {"schedule": "gpipe", "stages_per_rank": 2},
     "r/results.json, stages_per_rank: 2 stages per rank given for gpipe, " + ONE_STAGE),
    ("r/results.json", {"schedule": "interleaved1f1b", "stages_per_rank": True},
     "r/results.json, stages_per_rank: True is not a positive integer"),
]


def _measured_file(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in content))
    else:
        path.write_text(json.dumps({"format": "pipesim-run", "ranks": 3, "micro_batch_size": 1, "batch_size": 4,
                                    "network": None, "step_time": {"median": 1.0, "p10": 0.9, "p90": 1.1, "n": 3},
                                    **content}))
    return path


@pytest.mark.parametrize("name,content,named", MEASURED_CASES, ids=[str(i) for i in range(len(MEASURED_CASES))])
def test_compare_refuses_stages_per_rank_of_a_one_stage_schedule(capsys, tmp_path, name, content, named):
    path = _measured_file(tmp_path, name, content)
    line = _check(capsys, ["compare", "--profile", _profile_file(tmp_path), "--measured", str(path)], named)
    assert line.startswith("pipesim compare: error: ") and str(tmp_path / named.split(",")[0]) in line, line


def test_compare_refuses_it_in_a_folder_of_results_naming_the_file(capsys, tmp_path):
    _measured_file(tmp_path, "runs/a/results.json", {"schedule": "gpipe", "stages_per_rank": 1})
    bad = _measured_file(tmp_path, "runs/b/results.json", {"schedule": "1f1b", "stages_per_rank": 4})
    _check(capsys, ["compare", "--profile", _profile_file(tmp_path), "--measured", str(tmp_path / "runs")],
           f"{bad}, stages_per_rank: 4 stages per rank given for 1f1b, " + ONE_STAGE)


def test_compare_takes_one_stage_per_rank_of_any_schedule(capsys, tmp_path):
    """1 is what the one-stage schedules run (pipesim run writes it in their results): accepted, as
    is an interleaved schedule's v."""
    recs = [{**JSONL_REC, "schedule": s, "stages_per_rank": 1} for s in ("gpipe", "1f1b", "zbh1")]
    recs.append({**JSONL_REC, "schedule": "interleaved1f1b", "stages_per_rank": 3})
    jsonl = _measured_file(tmp_path, "m.jsonl", recs)
    res = _measured_file(tmp_path, "r/results.json", {"schedule": "gpipe", "stages_per_rank": 1})
    argv = ["compare", "--profile", _profile_file(tmp_path), "--measured", str(jsonl), str(res)]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "Compared 4 cells (gpipe 1, 1f1b 1, zbh1 1, interleaved1f1b 1)." in out, out
    assert "| gpipe | default | 1 | " in out and "| interleaved1f1b (v 3) | default | 1 | " in out, out


def test_output_folder_is_created_only_under_the_current_one(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(SIM + ["--trace", "new/deeper/t.json"]) == 0
    assert (tmp_path / "new" / "deeper" / "t.json").exists()
    assert "created folder new/deeper for --trace" in capsys.readouterr().err


@pytest.fixture
def no_temp_leftovers(tmp_path, monkeypatch):
    """Point the temp folder at an empty one; after the test it must still be empty."""
    tmp = tmp_path / "systemp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield
    assert os.listdir(tmp) == []


RUN = ["run", "--local", "--quiet"]
RUN_CASES = [
    (RUN + ["--threads", "0"], "--threads must be an integer >= 1"),
    (RUN + ["--steps", "0"], "--steps must be"),
    (RUN + ["--warmup", "-1"], "--warmup must be"),
    (RUN + ["--batch-size", "5", "--micro-batch-size", "2"], "--batch-size 5 is not a multiple of --micro-batch-size 2"),
    (RUN + ["--micro-batch-size", "0"], "--micro-batch-size must be"),
    (RUN + ["--op-timeout", "0"], "--op-timeout must be a number > 0"),
    (RUN + ["--op-timeout", "nan"], "--op-timeout must be"),
    (RUN + ["--timeout", "-1"], "--timeout must be a number > 0"),
    (RUN + ["--timeout", "inf"], "--timeout must be"),
    (RUN + ["--lr", "nan"], "--lr must be"),
    (RUN + ["--ranks", "0"], "--ranks must be an integer >= 1"),
    (RUN + ["--ranks", "99"], "--ranks must be at most the layers of --model cpu-small"),
    (RUN + ["--recv-ahead", "-3"], "--recv-ahead"),
    (RUN + ["--device", "tpu"], "--device"),
    (RUN + ["--model", "nope"], "--model: unknown model preset"),
    (RUN + ["--network", "link 0-5 delay 1ms"], "names link 0-5, but there are ranks 0..2 only"),
    (RUN + ["--network", ";"], "empty clause"),
    (RUN + ["--out", NOWHERE + "/r.json"], "--out: folder"),
    (RUN + ["--trace", NOWHERE + "/t"], "--trace: folder"),
    (RUN + ["--steps-log", NOWHERE + "/s.jsonl"], "--steps-log: folder"),
    (RUN + ["--log-dir", NOWHERE + "/logs"], "--log-dir: folder"),
]


@pytest.mark.parametrize("argv,named", RUN_CASES, ids=[f"{i}-{' '.join(a[3:])[:30]}" for i, (a, _) in
                                                        enumerate(RUN_CASES)])
def test_run_refuses_before_starting(capsys, no_temp_leftovers, argv, named):
    pytest.importorskip("torch")
    _check(capsys, argv, named)


CALIBRATE = ["calibrate", "--local", "--ranks", "3"]
CALIBRATE_CASES = [
    (CALIBRATE + ["--out", NOWHERE + "/p.json"], "--out: folder"),
    (CALIBRATE + ["--out", "{tmp}/p.json", "--log-dir", NOWHERE + "/logs"], "--log-dir: folder"),
    (CALIBRATE + ["--out", "{tmp}/p.json", "--timeout", "0"], "--timeout must be"),
    (CALIBRATE + ["--out", "{tmp}/p.json", "--network", "link 0-7 delay 1ms"], "--network: "),
    (CALIBRATE + ["--out", "{tmp}"], "--out: "),  # a folder
    (["calibrate", "--local", "--ranks", "0", "--out", "{tmp}/p.json"], "--ranks must be"),
]


@pytest.mark.parametrize("argv,named", CALIBRATE_CASES, ids=[str(i) for i in range(len(CALIBRATE_CASES))])
def test_calibrate_refuses_before_starting(capsys, tmp_path, argv, named):
    pytest.importorskip("torch")
    _check(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], named)


NETEM_CASES = [
    (["netem", "apply", "--iface", "eth0", "--network", "delay 1ms", "--limit", "-5", "--dry-run"],
     "--limit must be an integer >= 1"),
    (["netem", "apply", "--iface", "eth0", "--network", "delay 1ms", "--limit", "0", "--dry-run"], "--limit must be"),
    (["netem", "apply", "--iface", "eth0", "--network", "link 0-1 delay 1ms", "--dry-run"], "differs per link"),
    (["netem", "apply", "--iface", "eth0", "--network", ";", "--dry-run"], "empty clause"),
    (["netem", "clear", "--iface", "nosuchif0", "--state-dir", "{tmp}"], "no interface 'nosuchif0'"),
    (["netem", "clear", "--iface", "nosuchif0", "--state-dir", "{tmp}", "--dry-run"], "no interface 'nosuchif0'"),
    (["netem", "apply", "--iface", "eth0; rm", "--network", "delay 1ms", "--dry-run"], "--iface"),
    (["testbed", "check", "--network", "delay 1ms", "--seconds", "nan"], "--seconds must be a number > 0"),
    (["testbed", "check", "--network", "delay 1ms", "--pings", "0"], "--pings must be an integer >= 1"),
    (["testbed", "check", "--network", "delay 1ms;"], "empty clause"),
    (["testbed", "up", "--hosts", "0"], "num_hosts must be"),
    (["testbed", "up", "--hosts", "2", "--network", "link 0-5 delay 1ms"], "testbed hosts 0..1 only"),
]


@pytest.mark.parametrize("argv,named", NETEM_CASES, ids=[str(i) for i in range(len(NETEM_CASES))])
def test_netem_and_testbed_refuse(capsys, tmp_path, argv, named):
    line = _check(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv], named)
    assert line.startswith(f"pipesim {argv[0]} {argv[1]}: error: ")


@pytest.mark.parametrize("network,named", [
    ("link 0-2 delay 1ms", "only neighbour links"),
    ("default, link 5-9 delay 1ms", "stages 0..2 only"),
    ("default,", "empty setting"),
])
def test_validate_refuses_before_calibrating(capsys, tmp_path, network, named):
    _check(capsys, ["validate", "--out", str(tmp_path / "v"), "--network", network], named)
    assert not (tmp_path / "v").exists()


def test_figures_folder_outside_the_current_one_is_refused(capsys, tmp_path, monkeypatch):
    """--figures of plot, validate and demo: a missing folder outside the current one is refused
    (it used to be created anywhere, /nonexistent-dir included), before anything is measured."""
    import shutil
    from pathlib import Path

    from loop.validate import validate

    src = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "validation-2026-11-26-session3" / "demo-c"
    for name in ("measured.jsonl", "profile.json"):
        (tmp_path / "v").mkdir(exist_ok=True)
        shutil.copy(src / name, tmp_path / "v" / name)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    away = tmp_path / "away" / "deeper"   # under tmp_path, never a shared path: if it existed, validate would run
    _check(capsys, ["plot", "--out", str(tmp_path / "v"), "--figures", str(away / "figs")],
           f"--figures: folder {away} does not exist")
    with pytest.raises(ValueError, match="--figures: folder .* does not exist"):
        validate(str(tmp_path / "w"), figures=str(away / "figs"))
    assert not (tmp_path / "away").exists()
