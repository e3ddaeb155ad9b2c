"""``pipesim recommend``: ranking, memory, the why line, bad inputs, the figure (pipesim/recommend.py)."""

from __future__ import annotations

import json

import pytest

from loop.cli import main
from pipesim import engine as E
from pipesim import network as N
from pipesim import profile as P
from pipesim import recommend as R
from pipesim import schedule as S
from pipesim.profile import Profile, Stage, StageCompute
from tests.helpers import uniform_profile


def _kept(prof, batch, **kw):
    cands, _ = R.candidates(prof, batch, **kw)
    kept, _ = R.split_by_memory(prof, cands, batch, None)
    return kept


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("setting", ["default", "delay 5ms", "delay 10ms bandwidth 1Gbps"])
def test_ranking_is_sorted_and_matches_direct_simulations(setting):
    prof = P.load(None)
    net = N.parse(setting)
    ranked = R.rank(prof, net, _kept(prof, 24), 24)   # 24: every schedule takes every size (3 ranks)
    assert len(ranked) == len(S.GENERATORS) * len(prof.micro_batch_sizes)
    times = [s.step_time for s in ranked]
    assert times == sorted(times)
    for s in ranked:
        c = s.candidate
        direct = E.simulate(prof, c.schedule, c.micro_batch_size, 24, net, steps=2, record=False,
                            **c.generator_kwargs())
        assert s.step_time == direct.step_time


def test_candidates_cover_every_generator_and_only_dividing_sizes():
    prof = P.load(None)  # micro-batch sizes 1, 2, 4, 8
    cands, notes = R.candidates(prof, 12)
    assert {c.schedule for c in cands} == set(S.GENERATORS)
    assert {c.micro_batch_size for c in cands} == {1, 2, 4}
    assert any("8" in n and "do not divide" in n for n in notes)
    cands, _ = R.candidates(prof, 64, schedules=["1f1b"], micro_batch_sizes=[2, 8])
    assert [c.label for c in cands] == ["1f1b mbs 2", "1f1b mbs 8"]


def test_stages_per_rank_are_candidates_of_the_interleaved_schedule_only(monkeypatch):
    prof = uniform_profile(3, mbs=(1,))
    cands, notes = R.candidates(prof, 6, stages_per_rank=(2, 3))
    assert [c.label for c in cands if c.schedule == "interleaved1f1b"] == ["interleaved1f1b mbs 1 v 2",
                                                                         "interleaved1f1b mbs 1 v 3"]
    assert all(c.stages_per_rank is None for c in cands if c.schedule not in S.VIRTUAL)
    assert not notes
    seen = []
    real = E.simulate

    def simulate(*a, **kw):
        seen.append(kw.get("stages_per_rank"))
        return real(*a, **kw)

    monkeypatch.setattr(E, "simulate", simulate)
    kept, _ = R.split_by_memory(prof, cands, 6, None)
    rec = R.recommend(prof, N.parse("default"), kept, 6)
    assert {2, 3} <= set(seen)
    assert "| v |" in R.table(rec, 10)


# ----------------------------------------------------------------------------- memory


def test_activation_memory_is_boundary_activations_in_flight():
    p, nb, batch = 3, 1000, 8
    prof = uniform_profile(p, nbytes=nb, mbs=(1, 2))
    # per micro-batch in flight: rank 0 holds what it sends, rank 1 what it received and sends, rank 2 what it received
    held = [nb, 2 * nb, nb]
    for mbs in (1, 2):
        m = batch // mbs
        mem, infl = R.activation_memory(prof, R.Candidate("gpipe", mbs), batch)
        assert infl == [m] * p
        assert mem == [m * h * mbs for h in held]
        mem, infl = R.activation_memory(prof, R.Candidate("1f1b", mbs), batch)
        assert infl == [min(p - r, m) for r in range(p)]
        assert mem == [min(p - r, m) * held[r] * mbs for r in range(p)]


def test_memory_limit_drops_exactly_the_candidates_over_it():
    prof = uniform_profile(3, nbytes=1000, mbs=(1, 2))
    cands, _ = R.candidates(prof, 8, schedules=["gpipe", "1f1b"])
    peaks = {c.label: max(R.activation_memory(prof, c, 8)[0]) for c in cands}
    # gpipe: 8 x 2000 and 4 x 4000 = 16000 on rank 1; 1f1b: 2 x 2000 = 4000 and 2 x 4000 = 8000
    assert peaks == {"gpipe mbs 1": 16000, "gpipe mbs 2": 16000, "1f1b mbs 1": 4000, "1f1b mbs 2": 8000}
    kept, dropped = R.split_by_memory(prof, cands, 8, 8000)
    assert sorted(c.label for c, _, _ in kept) == ["1f1b mbs 1", "1f1b mbs 2"]  # the limit itself is allowed
    assert sorted(c.label for c, _, _ in dropped) == ["gpipe mbs 1", "gpipe mbs 2"]
    # ZB-H1 holds each activation until its W, which rank 1 runs one micro-batch later than its B
    zb, = R.candidates(prof, 8, schedules=["zbh1"], micro_batch_sizes=[1])[0]
    assert max(R.activation_memory(prof, zb, 8)[0]) == 6000 > peaks["1f1b mbs 1"]


def test_the_command_leaves_out_candidates_over_the_limit(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["recommend", "--batch-size", "16", "--memory-limit", "100MiB", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    ranked = doc["settings"][0]["ranked"]
    assert ranked and all(r["peak_memory_bytes"] <= 100 * 2 ** 20 for r in ranked)
    assert doc["dropped_over_memory_limit"]
    assert all(d["peak_memory_bytes"] > 100 * 2 ** 20 for d in doc["dropped_over_memory_limit"])
    text = capsys.readouterr().out
    assert "over --memory-limit 100.0 MiB, left out" in text


@pytest.mark.parametrize("text,value", [("16GiB", 16 * 2 ** 30), ("500MB", 500_000_000), ("1024", 1024),
                                        ("1.5 kib", 1536), ("2tb", 2 * 10 ** 12), ("7B", 7)])
def test_parse_bytes(text, value):
    assert R.parse_bytes(text) == value


# ----------------------------------------------------------------------------- why


def _two(prof, setting, batch=8, mbs=(1,), schedules=("gpipe", "1f1b")):
    net = N.parse(setting)
    rec = R.recommend(prof, net, _kept(prof, batch, schedules=list(schedules), micro_batch_sizes=list(mbs)), batch)
    assert rec.why is not None and rec.why.gap > 0
    assert sum(rec.why.parts.values()) == pytest.approx(rec.why.gap, abs=1e-9)
    return rec


def test_why_names_bandwidth_when_the_lead_vanishes_with_unlimited_bandwidth():
    # big messages, no latency anywhere: the two schedules tie on an ideal network
    prof = uniform_profile(3, nbytes=50_000_000, bandwidth=1e10, latency=0.0)
    rec = _two(prof, "bandwidth 1Gbps")
    assert rec.why.gap_unlimited_bandwidth == pytest.approx(0, abs=1e-9)
    assert rec.why.reason == "bandwidth"
    assert "mostly bandwidth" in rec.why_line()


def test_why_names_latency_when_the_lead_vanishes_with_zero_delay():
    prof = uniform_profile(3, nbytes=0, latency=0.0)
    rec = _two(prof, "delay 10ms")
    assert rec.why.gap_zero_delay == pytest.approx(0, abs=1e-9)
    assert rec.why.reason == "latency"
    assert "mostly exposed latency" in rec.why_line()


def test_why_names_the_bubble_with_no_network():
    prof = uniform_profile(3, mbs=(1, 2))  # compute linear in the size: only the bubble differs
    rec = _two(prof, "default", batch=4, mbs=(1, 2), schedules=("gpipe",))
    assert rec.best.candidate.micro_batch_size == 1
    assert rec.why.reason == "bubble"
    assert rec.why.gap == pytest.approx((2 + 2) * (2 + 4) - (4 + 2) * (1 + 2))  # (m + p - 1)(f + b), 24 - 18


def test_why_names_compute_when_a_size_computes_faster_per_sample():
    st = Stage(compute={1: StageCompute(1.0, 2.0), 2: StageCompute(1.5, 3.0)})
    prof = Profile(stages=(st,), links={}, device={"backend": "gloo"})
    rec = _two(prof, "default", batch=4, mbs=(1, 2), schedules=("gpipe",))
    assert rec.best.candidate.micro_batch_size == 2
    assert rec.why.gap == pytest.approx(12 - 9)
    assert rec.why.reason == "compute"


# ----------------------------------------------------------------------------- the command


def test_the_command_prints_a_table_and_one_why_line_per_setting(capsys):
    assert main(["recommend", "--network", "default, delay 10ms", "--batch-size", "16", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("### ") == 2
    assert out.count("\nwhy: ") == 2
    rows = [l for l in out.splitlines() if l.startswith("| ") and l[2].isdigit()]
    assert len(rows) == 6 and rows[0].startswith("| 1 |") and "best" in rows[0]


def test_json_dash_prints_json(capsys):
    assert main(["recommend", "--batch-size", "8", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"][0]["why_reason"] in R.PARTS


def test_the_figure_is_written(tmp_path):
    fig = tmp_path / "best.png"
    assert main(["recommend", "--batch-size", "8", "--micro-batch-sizes", "1,2", "--figure", str(fig)]) == 0
    assert fig.stat().st_size > 1000
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD = [
    (["--memory-limit", "lots"], "--memory-limit must be an integer >= 1"),
    (["--memory-limit=-1GB"], "--memory-limit must be"),
    (["--memory-limit", "0"], "--memory-limit must be an integer >= 1"),
    (["--memory-limit", "16XB"], "--memory-limit must be"),
    (["--memory-limit", "99999999TiB"], "--memory-limit must be"),
    (["--memory-limit", "1MB"], "every candidate is over --memory-limit"),
    (["--top", "0"], "--top must be an integer >= 1"),
    (["--batch-size", str(2 ** 24), "--micro-batch-sizes", "1"], "at most 50,000,000"),
    (["--batch-size", "65536", "--network", "seed"], "this recommendation would run"),
    (["--batch-size", "0"], "--batch-size must be"),
    (["--micro-batch-sizes", "3"], "--micro-batch-sizes: the profile has no compute for micro-batch size(s) 3"),
    (["--micro-batch-sizes", "0"], "--micro-batch-sizes"),
    (["--stages-per-rank", "x"], "--stages-per-rank"),
    (["--schedules", "zb"], "unknown schedule 'zb'"),
    (["--network", "delay -1ms"], "delay must be"),
    (["--figure", "/tmp/best.txt"], "--figure: name a .png, .svg, .pdf file"),
    (["--json", "{file}/r.json"], "--json: {file} is not a folder"),
    (["--profile", "{tmp}/missing.json"], "missing.json"),
]


@pytest.mark.parametrize("argv,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_inputs_give_one_line_and_exit_2(capsys, tmp_path, argv, named):
    (tmp_path / "a-file").write_text("")
    fill = {"file": str(tmp_path / "a-file"), "tmp": str(tmp_path)}
    argv, named = [a.format(**fill) for a in argv], named.format(**fill)
    rc = main(["recommend", *argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pipesim recommend: error:"), lines[0]
    assert named in lines[0], lines[0]
    assert "Traceback" not in err


def test_a_generator_that_refuses_a_shape_leaves_out_that_candidate_with_a_note(monkeypatch, capsys):
    def picky(num_stages, num_microbatches):
        if num_microbatches % 2:
            raise ValueError(f"needs an even number of micro-batches, got {num_microbatches}")
        return S.gpipe(num_stages, num_microbatches)

    monkeypatch.setitem(S.GENERATORS, "picky", picky)
    # batch 8: mbs 1 -> 8 micro-batches, mbs 8 -> 1 (refused)
    assert main(["recommend", "--batch-size", "8", "--schedules", "picky", "--micro-batch-sizes", "1,8"]) == 0
    out = capsys.readouterr().out
    assert "| 1 | picky | 1 |" in out
    assert "picky mbs 8 left out: needs an even number of micro-batches, got 1" in out
    assert main(["recommend", "--batch-size", "8", "--schedules", "picky", "--micro-batch-sizes", "8"]) == 2
    assert "no candidate can be scheduled" in capsys.readouterr().err
