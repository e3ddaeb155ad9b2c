"""Trace exports and the simulate/grid commands."""

import json
import subprocess
import sys

import pytest

from loop.cli import main
from pipesim import engine as E
from pipesim import network as N
from pipesim import trace as T
from tests.helpers import uniform_profile


def test_chrome_trace_has_rows_and_flows(tmp_path):
    r = E.simulate(uniform_profile(3, nbytes=100, latency=0.01), "1f1b", 1, 4, steps=1)
    doc = T.to_chrome(r.trace)
    ev = doc["traceEvents"]
    names = {(e["pid"], e["args"]["name"]) for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(0, "compute"), (0, "send"), (0, "recv")} <= names
    flows_s = [e for e in ev if e["ph"] == "s"]
    flows_f = [e for e in ev if e["ph"] == "f"]
    # every send has a flow arrow to its receive: 4 mbs x 2 links x 2 directions
    assert len(flows_s) == len(flows_f) == 16
    for s, f in zip(flows_s, flows_f):
        assert s["id"] == f["id"] and f["ts"] >= s["ts"]
    json.dumps(doc)  # serializable
    paths = T.write(r.trace, tmp_path / "t")
    assert [p.suffix for p in paths] == [".json", ".csv"]
    back = T.read_csv(tmp_path / "t.csv")
    assert back == r.trace


def test_csv_rejects_other_files(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a pipesim trace"):
        T.read_csv(tmp_path / "x.csv")


def test_grid_prints_the_seed_tables(capsys, tmp_path):
    assert main(["grid", "--network", "seed", "--micro-batch-sizes", "1,2,4", "--schedules", "gpipe,1f1b",
                 "--batch-size", "64", "--csv", str(tmp_path / "g.csv"), "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "### Gpipe based pipeline" in out and "### 1F1B based pipeline" in out
    labels = [l.split("|")[1].strip() for l in out.splitlines() if l.startswith("| ") and " s " in l]
    assert labels == N.SEED_LABELS * 2
    rows = [l for l in out.splitlines() if l.startswith("| delay 10ms  bandwidth 1Gbps")]
    assert all(l.count(" s ") == 3 for l in rows)
    cells = json.loads((tmp_path / "g.json").read_text())["cells"]
    assert len(cells) == 60
    # delay only makes things slower
    by = {(c["schedule"], c["network"], c["micro_batch_size"]): c["step_time_s"] for c in cells}
    for s in ("gpipe", "1f1b"):
        for m in (1, 2, 4):
            assert by[(s, N.SEED_LABELS[3], m)] > by[(s, N.SEED_LABELS[0], m)]


def test_simulate_writes_trace(capsys, tmp_path):
    assert main(["simulate", "--schedule", "1f1b", "--micro-batch-size", "4", "--batch-size", "64",
                 "--network", "delay 10ms bandwidth 1Gbps", "--trace", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "step time (rank 0)" in out and "[estimated]" in out
    assert json.loads((tmp_path / "s.json").read_text())["traceEvents"]


@pytest.mark.parametrize("argv,msg", [
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "3", "--batch-size", "64"], "not a multiple"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "4", "--batch-size", "64", "--network", "delay -1ms"],
     "delay must be a number >= 0"),
    (["grid", "--micro-batch-sizes", "1,x"], "integers"),
    (["grid", "--schedules", "gpipe,zb"], "unknown schedule"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "4", "--batch-size", "64", "--profile", "/nope.json"],
     "no such profile"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "4", "--batch-size", "64", "--profile", "/"],
     "/: is a folder"),
    (["simulate", "--schedule", "gpipe", "--micro-batch-size", "4", "--batch-size", "64", "--recv-ahead", "-3"],
     "--recv-ahead must be -1 (all receives at step start) or an integer >= 0"),
    (["grid", "--eager-limit-bytes", "-1"], "--eager-limit-bytes must be >= 0"),
])
def test_cli_errors_say_what_to_do(capsys, argv, msg):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "pipesim", "simulate", "--schedule", "gpipe",
                          "--micro-batch-size", "4", "--batch-size", "64"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "step time" in out.stdout


def test_pipesim_package_does_not_import_torch():
    code = ("import sys, loop.cli, pipesim.engine, pipesim.cmd_sim; loop.cli.build_parser(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------- the profile's transport section


def _step(capsys, *argv) -> tuple[float, str]:
    assert main(["simulate", "--schedule", "1f1b", "--micro-batch-size", "1", "--batch-size", "8", *argv]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("step time (rank 0)"))
    return float(line.split(":")[1].split()[0]), next(l for l in out.splitlines() if l.startswith("transport:"))


def test_profile_transport_section_is_the_default_and_flags_override_it(capsys, tmp_path):
    from dataclasses import replace

    plain = uniform_profile(3, 0.02, 0.04, latency=0.05, bandwidth=1e9, nbytes=10 ** 5)   # gloo: link queues
    plain.save(tmp_path / "plain.json")
    # another runtime: one send and one receive stream per rank, all receives posted at step start
    other = replace(plain, transport=E.Transport(queue="rank", send_mode="rendezvous", recv_ahead=None))
    other.save(tmp_path / "other.json")
    t_plain, tr_plain = _step(capsys, "--profile", str(tmp_path / "plain.json"))
    t_other, tr_other = _step(capsys, "--profile", str(tmp_path / "other.json"))
    assert "link queues" in tr_plain and "default for backend gloo" in tr_plain
    assert "rank queues" in tr_other and "the profile's transport section" in tr_other
    assert t_other > t_plain * 1.2   # head-of-line blocking between forward and backward traffic
    assert t_other == pytest.approx(E.simulate(other, "1f1b", 1, 8).step_time, abs=1e-4)   # simulate() reads it too
    # flags override the section: back to the gloo transport
    t_flags, tr_flags = _step(capsys, "--profile", str(tmp_path / "other.json"), "--queue", "link")
    assert t_flags == pytest.approx(t_plain, abs=1e-4) and "flags on top" in tr_flags
    # an eager limit above the message size makes every send eager
    t_eager, _ = _step(capsys, "--profile", str(tmp_path / "other.json"), "--eager-limit-bytes", str(10 ** 6))
    t_eager_mode, _ = _step(capsys, "--profile", str(tmp_path / "other.json"), "--send-mode", "eager")
    assert t_eager == pytest.approx(t_eager_mode, abs=1e-4) and t_eager != pytest.approx(t_other, abs=1e-4)
    # the grid records the transport it used
    assert main(["grid", "--profile", str(tmp_path / "other.json"), "--network", "default", "--micro-batch-sizes", "1",
                 "--batch-size", "8", "--json", str(tmp_path / "g.json")]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "g.json").read_text())["transport"] == other.transport.to_json()
