"""The validate / plot / demo loop, end to end with real ranks (tiny preset, 2 ranks).

One validation runs per module (calibration, simulation, measurement, comparison,
figures); the tests then check what it wrote, that its predictions come from the
profile alone, that an interrupted run resumes without measuring finished cells
again, that ``pipesim plot`` redraws the figures, and that the demo without a testbed
says why and measures only the default-network cells.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics

import pytest

pytest.importorskip("torch")

from loop import compare as C  # noqa: E402
from loop import validate as V  # noqa: E402
from loop.cli import main  # noqa: E402
from pipesim import engine as E  # noqa: E402
from pipesim import network as N  # noqa: E402
from pipesim import profile as P  # noqa: E402

MAPE_LINE = re.compile(r"^MAPE: gpipe \d+\.\d%, 1f1b \d+\.\d%, worst \d+\.\d% \((gpipe|1f1b), .+, mbs \d+\)$")
KW = dict(model="tiny", ranks=2, micro_batch_sizes=(1, 2), schedules=("gpipe", "1f1b"), batch_size=4, steps=2,
          warmup=1, window_probe=None, calibrate_repeats=3, repeats=2, tiebreak_pct=None, cell_timeout_s=120,
          retries=0, level_probe=True)


def _networks():
    from testbed import available

    ok, _ = available()
    return "default, delay 2ms" if ok else "default"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    figs = out / "figs"
    summ = V.validate(out, networks=_networks(), figures=figs, **KW)
    return out, figs, summ


def test_validation_writes_comparison_figures_and_the_mape_line(done):
    out, figs, summ = done
    cells = 2 * len(N.parse_grid(_networks())) * 2
    runs = V.load_runs(out / "measured.jsonl")
    assert len(runs) == cells and all(sorted(r) == [0, 1] for r in runs.values())   # two passes
    for rec in (x for r in runs.values() for x in r.values()):
        assert rec["p10"] <= rec["median"] <= rec["p90"] and rec["n"] == 2
    comp = json.loads((out / "comparison.json").read_text())
    assert len(comp["cells"]) == cells and set(comp["mape"]) == {"gpipe", "1f1b"}
    for row in comp["cells"]:
        err = abs(row["simulated_s"] - row["measured_s"]) / row["measured_s"] * 100
        assert err <= comp["worst_pct"] + 1e-9
        key = f"{row['schedule']}|{row['network']}|{row['micro_batch_size']}"
        medians = [runs[key][i]["median"] for i in (0, 1)]
        assert row["runs_s"] == medians and row["measured_s"] == pytest.approx(sum(medians) / 2)
        assert row["noise_pct"] == pytest.approx(V.run_spread_pct(medians))
    last = (out / "comparison.md").read_text().strip().splitlines()[-1]
    assert MAPE_LINE.match(last), last
    assert last == summ.last_line()
    assert "Run-to-run spread of a cell" in (out / "comparison.md").read_text()
    for name in ("parity.png", "bars.png", "timeline.png", "heatmap.png"):
        assert (figs / name).stat().st_size > 10_000, name
    # every run kept its trace (CSV) and was replayed with its own compute; the timeline cell also in Chrome JSON
    for r in (x for by in runs.values() for x in by.values()):
        assert (out / r["trace"]).exists() and r["replay_s"] > 0, r
        assert r["usage"]["ranks_cpu_s"] > 0 and "drift_pct" in r
    tl = "1f1b_" + V._slug(N.parse_grid(_networks())[-1].label) + "_mbs1"
    assert (out / "runs" / tl / "run0" / "trace.json").exists()
    assert not (out / "runs" / "gpipe_default_mbs1" / "run0" / "trace.json").exists()
    text = (out / "comparison.md").read_text()
    assert "| replay s | replay err | at run speed err | recal err | CPU drift |" in text
    lines = text.strip().splitlines()
    assert lines[-4].startswith("Replay MAPE (each run with its own compute): gpipe ")
    assert lines[-3].startswith("At each run's own speed (the profile at its ranks' CPU per step): gpipe ")
    assert lines[-2].startswith("Recalibrated (the profile at the machine's level, re-probed before each setting): "
                                "gpipe ")
    assert lines[-5].startswith("Machine speed during the runs (each rank's CPU per step against the profile's")


def test_every_run_records_its_speed_against_the_profile(done):
    """Each run's ranks' CPU per step over what the profile charges them is its speed
    (cpu_factors, their median cpu_drift), and the cell simulated at those speeds is its
    speed_replay_s (pipesim.context.cpu_replay), recomputed here from the run's results."""
    from pipesim import context as CX

    out, _, _ = done
    prof = P.load(out / "profile.json")
    recs = [x for by in V.load_runs(out / "measured.jsonl").values() for x in by.values()]
    for r in recs:
        res = json.loads((out / r["results"]).read_text())
        per = sorted(res["per_rank"], key=lambda x: x["rank"])
        cpu = [x["cpu_per_step"]["median"] for x in per]
        comp = [x["compute_cpu_per_step"]["median"] for x in per]
        # this calibration's overhead probe kept the CPU inside its launches' computations, so
        # the speed is the run's compute CPU per unit of solo compute over the probe's
        ref = CX.compute_reference(prof, r["schedule"], r["micro_batch_size"])
        assert ref is not None and r["speed_basis"] == "compute"
        m = r["batch_size"] // r["micro_batch_size"]
        solo = [c for c, _ in E.rank_work(prof, r["schedule"], r["micro_batch_size"], m)]
        assert r["cpu_factors"] == pytest.approx([c / s / q for c, s, q in zip(comp, solo, ref)], rel=1e-9)
        assert r["cpu_drift"] == pytest.approx(statistics.median(r["cpu_factors"]))
        again = CX.cpu_replay(prof, r["schedule"], r["micro_batch_size"], r["batch_size"],
                              C.setting_of(r["network"]), cpu, transport=E.Transport.for_profile(prof),
                              steps=C.SIM_STEPS, run_compute_cpu_per_step=comp)
        assert r["speed_replay_s"] == pytest.approx(again.step_time, rel=1e-9)
        # on the process's CPU (the basis of older runs) it would read the ratio of the process's
        old = CX.cpu_replay(prof, r["schedule"], r["micro_batch_size"], r["batch_size"],
                            C.setting_of(r["network"]), cpu, steps=C.SIM_STEPS)
        want = CX.cpu_per_step(prof, r["schedule"], r["micro_batch_size"], r["batch_size"])
        assert old.basis == "process" and old.factors == pytest.approx([c / w for c, w in zip(cpu, want)])


def test_every_run_records_the_compute_probe_against_its_reference(done):
    """Before each run the model's compute is probed; its ratio to the probe right after
    calibration is recorded (it feeds no prediction: benchmarks/drift_tracking.py scores it)."""
    from calibrate.drift import compute_drift

    out, _, _ = done
    ref = json.loads((out / "compute_probe.json").read_text())
    assert set(ref) == {"1", "2"} and all(len(r["per_rank_s"]) == 2 and min(r["per_rank_s"]) > 0 for r in ref.values())
    recs = [x for by in V.load_runs(out / "measured.jsonl").values() for x in by.values()]
    for r in recs:
        m = r["micro_batch_size"]
        assert r["compute_drift"] == pytest.approx(compute_drift({"per_rank_s": r["compute_probe_s"]}, ref[str(m)]))
        assert "tracked_s" not in r


def test_the_level_is_reprobed_before_each_setting_and_recalibrates_the_runs_prediction(done):
    """One level probe (the runtime on the default network, 4 micro-batches) before each
    (schedule, setting) of each pass; every run records the level of the probes before it
    (the median of the last LEVEL_WINDOW) and the cell simulated from the profile at that
    level, never from a step time."""
    from loop import level as L

    out, _, _ = done
    prof = P.load(out / "profile.json")
    readings = [json.loads(x) for x in (out / "levels.jsonl").read_text().splitlines()]
    groups = 2 * len(N.parse_grid(_networks()))
    assert len(readings) == 2 * groups                   # two passes, no tie-break
    assert [r["index"] for r in readings] == list(range(len(readings)))
    for r in readings:
        res = json.loads((out / r["results"]).read_text())
        assert res["network"] in (None, "default") and res["num_microbatches"] == 4 and r["schedule"] == res["schedule"]
        assert r["cpu_drift"] == pytest.approx(statistics.median(r["cpu_factors"])) and r["cpu_drift"] > 0
    tr = E.Transport.for_profile(prof)
    recs = [x for by in V.load_runs(out / "measured.jsonl").values() for x in by.values()]
    for r in recs:
        n = r["level_readings"]
        assert 1 <= n <= len(readings) and r["level"] == L.level_of(readings, n)
        again = E.simulate(prof.compute_scaled(r["level"]), r["schedule"], r["micro_batch_size"], r["batch_size"],
                           C.setting_of(r["network"]), transport=tr, steps=V.SIM_STEPS, record=False)
        assert r["recal_s"] == pytest.approx(again.step_time, rel=1e-12)
    comp = json.loads((out / "comparison.json").read_text())
    assert set(comp["recal_mape"]) == {"gpipe", "1f1b"} and comp["recal_worst_pct"] >= max(comp["recal_mape"].values())


def test_the_level_is_the_median_of_the_last_undisturbed_readings():
    from loop.level import level_of

    rs = [{"cpu_drift": x} for x in (1.0, 1.2, 0.9, 1.1)]
    assert level_of([]) is None and level_of(rs, 0) is None
    assert level_of(rs, 1) == 1.0 and level_of(rs, 2) == pytest.approx(1.1) and level_of(rs) == pytest.approx(1.05)
    assert level_of(rs, window=2) == pytest.approx(1.0)                   # the last two: 0.9 and 1.1
    rs[3]["disturbed"] = "other processes used 40% of a core"
    assert level_of(rs, window=2) == pytest.approx(1.05)                  # 1.2 and 0.9: the disturbed one left out
    assert level_of([{"disturbed": "x", "cpu_drift": 2.0}, {}]) is None   # no usable reading


def test_predictions_come_from_the_profile_alone(done):
    out, _, _ = done
    prof = P.load(out / "profile.json")
    sim = {c["key"]: c["simulated_s"] for c in json.loads((out / "simulated.json").read_text())["cells"]}
    tr = E.Transport.for_backend(prof.device.get("backend"))
    for key, value in sim.items():
        s, label, m = key.split("|")
        net = N.parse_grid(label)[0]
        again = E.simulate(prof, s, int(m), KW["batch_size"], net, transport=tr, steps=V.SIM_STEPS, record=False)
        assert again.step_time == pytest.approx(value, rel=1e-12)


def test_interrupted_validation_resumes_without_measuring_again(done, monkeypatch):
    src, _, _ = done
    out = src.parent / "resume"
    shutil.copytree(src, out)
    lines = (out / "measured.jsonl").read_text().splitlines()
    # the last run never finished, and a crash cut a line in half; the other runs are
    # tampered with, so a comparison built from them shows they were reused, not remeasured
    kept = [json.loads(x) for x in lines[:-1]]
    for rec in kept:
        rec["median"] = rec["p10"] = rec["p90"] = 1.0
    (out / "measured.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + lines[-1][:20])
    sim_before = json.loads((out / "simulated.json").read_text())["cells"]
    prof_before = (out / "profile.json").stat().st_mtime_ns
    calls = []
    real = V.measure_cell

    def counting(*a, **k):
        calls.append((a[3], a[4].label, a[5], k["run"]))
        return real(*a, **k)

    monkeypatch.setattr(V, "measure_cell", counting)
    V.validate(out, networks=_networks(), figures=None, **KW)
    last = json.loads(lines[-1])
    assert calls == [(last["schedule"], last["network"], last["micro_batch_size"], last["run"])]
    assert (out / "profile.json").stat().st_mtime_ns == prof_before       # calibration reused
    assert json.loads((out / "simulated.json").read_text())["cells"] == sim_before   # measured never feed the model
    rows = json.loads((out / "comparison.json").read_text())["cells"]
    assert sum(r["measured_s"] == 1.0 for r in rows) == len(rows) - 1    # only the remeasured cell moved


def test_tiebreak_runs_only_cells_whose_runs_disagree(done, monkeypatch):
    src, _, _ = done
    out = src.parent / "tiebreak"
    shutil.copytree(src, out)
    recs = [json.loads(x) for x in (out / "measured.jsonl").read_text().splitlines()]
    target = recs[0]["key"]
    for rec in recs:                     # all runs agree exactly, except the first cell's
        rec["median"] = 2.0 if (rec["key"] == target and rec["run"] == 1) else 1.0
    (out / "measured.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    calls = []
    monkeypatch.setattr(V, "measure_cell", lambda *a, **k: calls.append((a[3], a[4].label, a[5], k["run"]))
                        or {"median": 1.1, "p10": 1.0, "p90": 1.2, "n": 2, "wall_s": 0.0, "results": "", "trace": None})
    V.validate(out, networks=_networks(), figures=None, **{**KW, "tiebreak_pct": 4.0})
    s, label, m = target.split("|")
    assert calls == [(s, label, int(m), 2)]
    rows = json.loads((out / "comparison.json").read_text())["cells"]
    row = next(r for r in rows if f"{r['schedule']}|{r['network']}|{r['micro_batch_size']}" == target)
    assert row["runs_s"] == [1.0, 2.0, 1.1] and row["measured_s"] == 1.1     # the median of three


def test_plot_redraws_the_figures(done, tmp_path, capsys):
    out, _, _ = done
    assert main(["plot", "--out", str(out), "--figures", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[-1] for p in printed) == ["bars.png", "heatmap.png", "parity.png", "timeline.png"]
    assert all((tmp_path / n).stat().st_size > 10_000 for n in ("parity.png", "heatmap.png"))


@pytest.mark.parametrize("against", ["profile", "replay"])
def test_explain_a_cell_of_the_validation(done, capsys, against):
    out, _, _ = done
    label = N.parse_grid(_networks())[-1].label
    assert main(["explain", "--out", str(out), "--schedule", "1f1b", "--network", label,
                 "--micro-batch-size", "1", "--against", against]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Explain 1f1b, {label}, mbs 1: run ")
    total = next(line for line in text.splitlines() if line.startswith("| **total**"))
    m, s_, d = (float(x) for x in total.split("|")[2:5])
    assert d == pytest.approx(m - s_, abs=0.02)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "**total**" not in line
            and not line.startswith("| cause")]
    assert sum(float(r.split("|")[4]) for r in rows) == pytest.approx(d, abs=0.05)
    speed = re.search(r"of the ([-+]\d+\.\d+) ms, ([-+]\d+\.\d+) ms is the machine's speed .* and ([-+]\d+\.\d+) ms "
                      r"the model's", text)
    if against == "profile":   # the machine's speed and the model's part add up to the difference
        # on the CPU inside the computations (this calibration's probe kept the reference), and said so
        assert text.split("\n\n")[-1].startswith("The run's speed: the CPU its ranks spent in their computations per "
                                                  "step against calibration's: rank 0 ")
        assert speed and float(speed[1]) == pytest.approx(d, abs=0.02)
        assert float(speed[2]) + float(speed[3]) == pytest.approx(float(speed[1]), abs=0.02)
        # off the default network: the CPU outside the computations against the default cell's runs
        outside = re.search(r"Outside their computations the ranks spent ([\d.]+) / ([\d.]+) ms of CPU per step "
                            r"\(ranks 0 to 1\), ([-+][\d.]+) / ([-+][\d.]+) ms against this cell's runs on the "
                            r"default network", text)
        if N.parse_grid(label)[0].is_default:
            assert outside is None
        else:
            assert outside and all(float(x) >= 0 for x in outside.groups()[:2])
            runs = V.load_runs(out / "measured.jsonl")
            base = [x for k, r in runs.items() if k.startswith("1f1b|default|1|") or k == "1f1b|default|1"
                    for x in r.values()]
            assert base   # the default cell it was set against
    else:
        assert speed is None


def test_explain_names_a_missing_cell(done, capsys):
    out, _, _ = done
    assert main(["explain", "--out", str(out), "--schedule", "gpipe", "--network", "delay 99ms",
                 "--micro-batch-size", "1"]) == 2
    err = capsys.readouterr().err
    assert "no traced run of gpipe, delay 99ms, mbs 1" in err
    assert "networks 'default'" in err and "micro-batch sizes 1" in err, err   # what the folder has


def test_explain_takes_a_settings_short_name(done, capsys, tmp_path):
    out, _, _ = done
    # the folder as `pipesim validate` writes the default setting: with its description in parentheses
    long = "default (about 0.1ms; up to 10Gbps)"
    copy = tmp_path / "v"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("figs"))
    lines = []
    for line in (copy / "measured.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["network"] == "default":
            rec["network"], rec["key"] = long, rec["key"].replace("|default|", f"|{long}|")
        lines.append(json.dumps(rec))
    (copy / "measured.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["explain", "--out", str(copy), "--schedule", "1f1b", "--network", "default",
                 "--micro-batch-size", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"Explain 1f1b, {long}, mbs 1: run ")


def test_plot_without_a_validation_says_what_to_run(tmp_path, capsys):
    assert main(["plot", "--out", str(tmp_path / "nothing")]) != 0
    assert "run 'pipesim validate" in capsys.readouterr().err


def test_demo_without_testbed_says_why_and_measures_default_cells(done, tmp_path, monkeypatch, capsys):
    import testbed as T

    src, _, _ = done
    out = tmp_path / "demo"
    out.mkdir()
    shutil.copy(src / "profile.json", out / "profile.json")   # reuse the calibration: this test is about the path
    monkeypatch.setattr(T, "available", lambda: (False, "not running as root"))
    rc = main(["demo", "--out", str(out), "--model", "tiny", "--ranks", "2", "--micro-batch-sizes", "1",
               "--batch-size", "2", "--steps", "2", "--accept-noise"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-2000:]
    assert "local testbed is not available (not running as root)" in cap.err
    assert (out / "figures" / "parity.png").stat().st_size > 0   # the figures go with the demo's folder
    runs = V.load_runs(out / "measured.jsonl")
    assert {r[0]["network"] for r in runs.values()} == {"default"}
    # the demo measures each cell twice, and a third time where the two are over 4% apart
    assert len(runs) == 2 and all(sorted(r) in ([0, 1], [0, 1, 2]) for r in runs.values())
    assert MAPE_LINE.match(cap.out.strip().splitlines()[-1])
    # the level probe is asked for (--level-probe), not run by default
    assert not (out / "levels.jsonl").exists() and "Recalibrated" not in cap.out
    assert not any("recal_s" in x for r in runs.values() for x in r.values())


@pytest.mark.parametrize("args, msg", [(["--micro-batch-sizes", "1,3", "--batch-size", "4"], "not a multiple"),
                                       (["--repeats", "0"], "at least 1"),
                                       (["--overhead-launches", "51"], "--overhead-launches must be a whole number")])
def test_bad_arguments_are_refused(tmp_path, capsys, args, msg):
    rc = main(["validate", "--out", str(tmp_path), *args])
    assert rc != 0 and msg in capsys.readouterr().err


def test_validate_and_demo_weigh_the_noise_floor_against_their_own_target(monkeypatch, tmp_path):
    import testbed as T
    from loop.noise import TARGETS

    seen = {}
    monkeypatch.setattr(T, "available", lambda: (True, ""))
    monkeypatch.setattr(V, "validate", lambda out, **kw: seen.setdefault(str(out), kw.get("target")))
    for verb in ("validate", "demo"):
        assert main([verb, "--out", str(tmp_path / verb), "--figures", ""]) == 0
        assert seen[str(tmp_path / verb)] == TARGETS[verb]
