"""The simulator on the simulated-only schedules: interleaved 1F1B (virtual stages) and
ZB-H1 (split backward), exact against their closed forms with uniform stages and no
communication; messages to the rank owning the peer stage; the profile's optional fields."""

from dataclasses import replace

import pytest

from pipesim import engine as E
from pipesim import profile as P
from pipesim import schedule as S
from tests.helpers import uniform_profile

TRANSPORTS = [E.Transport(queue="link", send_mode="rendezvous", recv_ahead=None),
              E.Transport(queue="link", send_mode="eager", recv_ahead=0),
              E.Transport(queue="rank", send_mode="rendezvous", recv_ahead=0)]


def split_profile(p, f, b, w, **kw):
    """Uniform stages with backward_s = b + w split into B = b and W = w."""
    prof = uniform_profile(p, f, b + w, **kw)
    return replace(prof, stages=tuple(
        replace(s, compute={k: replace(c, backward_input_s=b * k, backward_weight_s=w * k) for k, c in s.compute.items()})
        for s in prof.stages))


@pytest.mark.parametrize("p,m", [(2, 2), (2, 5), (3, 3), (3, 8), (4, 4), (4, 9), (6, 13)])
@pytest.mark.parametrize("fbw", [(1, 1, 1), (1, 2, 1), (2, 1, 1), (3, 2, 1), (1, 1, 3), (2, 1, 3), (1, 2, 2)])
@pytest.mark.parametrize("steps", [1, 3])
def test_zbh1_step_closed_form(p, m, fbw, steps):
    # ZB-H1 with uniform F, B, W and m >= p: step = m (F + B + W) + (p - 1) max(F + B - W, B).
    # Rank 0 waits (p - 1) B for its first gradient (the B chain up from the last stage),
    # and max(F - W, 0) before each of its last p - 1 backwards: there its gradients arrive
    # F + B apart (the later ranks run F B pairs, their W passes deferred) while it runs
    # B + W per micro-batch. Nothing else idles. With W <= F this is the paper's
    # (p - 1)(F + B - W) (Qi et al. 2024, section 3.1); 1F1B's is (p - 1)(F + B + W).
    f, b, w = fbw
    r = E.simulate(split_profile(p, f, b, w), "zbh1", 1, m, steps=steps)
    assert r.step_time == pytest.approx(m * (f + b + w) + (p - 1) * max(f + b - w, b), rel=1e-12)
    one = E.simulate(split_profile(p, f, b, w), "1f1b", 1, m, steps=steps)
    assert one.step_time == pytest.approx((m + p - 1) * (f + b + w), rel=1e-12)
    assert sum(x.compute for x in r.ranks) == pytest.approx(p * m * (f + b + w))
    assert [x.peak_inflight for x in r.ranks] == [p] * p  # 1F1B's peak on rank 0, on every rank


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
@pytest.mark.parametrize("p,m", [(3, 3), (4, 8)])
def test_zbh1_closed_form_under_every_transport(transport, p, m):
    r = E.simulate(split_profile(p, 1.0, 1.0, 1.0), "zbh1", 1, m, transport=transport, steps=2)
    assert r.step_time == pytest.approx(m * 3 + (p - 1) * 1, rel=1e-12)


def test_zbh1_default_split_is_half_and_half():
    prof = uniform_profile(3, 1.0, 2.0)  # backward_s 2, no split fields: B = W = 1
    assert E.simulate(prof, "zbh1", 1, 6).step_time == pytest.approx(6 * 3 + 2 * max(1 + 1 - 1, 1))


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("v", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 3])
def test_interleaved_bubble_shrinks_by_v(p, v, k, steps):
    # v chunks of f/v and b/v per rank: step = m (f + b) + (p - 1)(f + b) / v, i.e.
    # (m v + p - 1) chunk-times, against 1F1B's (m + p - 1)(f + b)
    f, b, m = 1.0, 2.0, k * p
    r = E.simulate(uniform_profile(p, f, b), "interleaved1f1b", 1, m, steps=steps, stages_per_rank=v)
    assert r.step_time == pytest.approx(m * (f + b) + (p - 1) * (f + b) / v, rel=1e-12)
    assert r.bubble_fraction == pytest.approx((p - 1) / v / (m + (p - 1) / v), abs=1e-12)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=str)
def test_interleaved_closed_form_under_every_transport(transport):
    r = E.simulate(uniform_profile(3, 1.0, 2.0), "interleaved1f1b", 1, 6, transport=transport, stages_per_rank=2)
    assert r.step_time == pytest.approx(6 * 3 + 2 * 3 / 2, rel=1e-12)


def test_interleaved_messages_go_to_the_rank_of_the_peer_stage():
    # p = 2, v = 2: stage 1 (rank 1) -> stage 2 (rank 0) crosses the wrap-around link 1 -> 0
    prof = uniform_profile(2, 1.0, 2.0, latency=0.5)
    r = E.simulate(prof, "interleaved1f1b", 1, 2, stages_per_rank=2, record=True)
    sends = {(e.rank, e.action) for e in r.trace if "S" in e.action}
    assert (1, "1SF0") in sends and (0, "2SB0") in sends and (0, "0SF0") in sends and (1, "3SB0") in sends
    recvs = {(e.rank, e.action) for e in r.trace if "R" in e.action}
    assert (0, "2RF0") in recvs and (1, "1RB0") in recvs
    zero = E.simulate(uniform_profile(2, 1.0, 2.0), "interleaved1f1b", 1, 2, stages_per_rank=2)
    assert r.step_time > zero.step_time  # every hop pays its latency


def test_one_rank_interleaved_sends_nothing():
    r = E.simulate(uniform_profile(1, 1.0, 2.0), "interleaved1f1b", 1, 4, stages_per_rank=3, record=True)
    assert r.step_time == pytest.approx(4 * 3.0)
    assert {e.kind for e in r.trace} == {"F", "B", "OPT"}


def test_virtual_stages_from_the_profile():
    base = uniform_profile(2, 1.0, 2.0)
    # rank 0 runs stages 0 and 2; give them unequal halves, rank 1 equal ones
    c = base.stages[0].compute[1]
    halves = (replace(c, forward_s=0.25, backward_s=0.5), replace(c, forward_s=0.75, backward_s=1.5))
    prof = replace(base, stages=(replace(base.stages[0], virtual_stages=({1: halves[0]}, {1: halves[1]})),
                                 base.stages[1]))
    comp = prof.virtual_compute(1, S.loop_placement(2, 2))
    assert [x.forward_s for x in comp] == [0.25, 0.5, 0.75, 0.5]
    trace = E.simulate(prof, "interleaved1f1b", 1, 4, stages_per_rank=2, steps=1).trace
    took = {e.action: e.end - e.start for e in trace}
    assert (took["0F1"], took["2F1"], took["2B1"], took["1F1"]) == (0.25, 0.75, 1.5, 0.5)
    with pytest.raises(ValueError, match=r"stages\[0\].virtual_stages has 2 entries, the schedule puts 3 stages on rank 0"):
        E.simulate(prof, "interleaved1f1b", 1, 4, stages_per_rank=3)


def test_profile_fields_are_optional_and_round_trip(tmp_path):
    old = P.load()  # a profile written before the fields existed
    doc = old.to_json()
    assert "backward_input_s" not in doc["stages"][0]["compute"]["1"] and "virtual_stages" not in doc["stages"][0]
    c = old.stages[0].compute[1]
    assert c.backward_split() == (c.backward_s * 0.5, c.backward_s * 0.5)
    doc["stages"][0]["compute"]["1"]["backward_input_s"] = c.backward_s * 0.6
    doc["stages"][1]["virtual_stages"] = [doc["stages"][1]["compute"], doc["stages"][1]["compute"]]
    new = P.from_json(doc)
    assert new.stages[0].compute[1].backward_split() == pytest.approx((c.backward_s * 0.6, c.backward_s * 0.4))
    assert P.from_json(new.to_json()) == new
    doc["stages"][0]["compute"]["1"]["backward_weight_s"] = c.backward_s * 2
    doc["stages"][0]["compute"]["1"].pop("backward_input_s")
    with pytest.raises(ValueError, match=r'stages\[0\].compute\["1"\] splits backward_s .* leaving backward_input_s'):
        P.from_json(doc)


def test_simulate_refuses_v_for_one_stage_schedules():
    with pytest.raises(ValueError, match="schedule 'gpipe' runs one stage per rank"):
        E.simulate(uniform_profile(2), "gpipe", 1, 4, stages_per_rank=2)
    with pytest.raises(ValueError, match="interleaved1f1b splits the micro-batches into max"):
        E.simulate(uniform_profile(2), "interleaved1f1b", 1, 5, stages_per_rank=2)


def test_actions_per_step_is_exact():
    for name, p, v, m in [("zbh1", 3, 1, 5), ("interleaved1f1b", 3, 2, 6), ("interleaved1f1b", 1, 3, 2), ("1f1b", 4, 1, 3)]:
        n = sum(len(a) for a in S.build(name, p, m, stages_per_rank=v))
        assert n == E.actions_per_step(p, m, v, split=name in S.SPLIT_BACKWARD)
        r = E.simulate(uniform_profile(p), name, 1, m, steps=1, stages_per_rank=v)
        assert r.actions == n


# ----------------------------------------------------------------------------- the command line


def test_cli_simulates_the_new_schedules(capsys):
    from loop.cli import main

    assert main(["simulate", "--schedule", "zbh1", "--micro-batch-size", "4", "--batch-size", "48"]) == 0
    assert main(["simulate", "--schedule", "interleaved1f1b", "--stages-per-rank", "3", "--micro-batch-size", "4",
                 "--batch-size", "48"]) == 0
    out = capsys.readouterr().out
    assert "zbh1, micro-batch 4 x 12, 3 stages" in out and "interleaved1f1b, micro-batch 4 x 12, 3 ranks x 3 stages" in out
    assert main(["grid", "--network", "default,delay 5ms", "--micro-batch-sizes", "2,4", "--batch-size", "24",
                 "--schedules", "1f1b,zbh1,interleaved1f1b"]) == 0
    out = capsys.readouterr().out
    assert "### ZB-H1 based pipeline" in out and "### Interleaved 1F1B based pipeline" in out


@pytest.mark.parametrize("argv,message", [
    (["simulate", "--schedule", "interleaved1f1b", "--micro-batch-size", "4", "--batch-size", "64"],
     "interleaved1f1b splits the micro-batches into max(1, m // p) equal rounds, as torch's ScheduleInterleaved1F1B "
     "does: 16 micro-batches on 3 ranks do not split into 5 (a multiple of the ranks always does) "
     "(micro-batch size 4, batch size 64)"),
    (["simulate", "--schedule", "1f1b", "--stages-per-rank", "2", "--micro-batch-size", "4", "--batch-size", "48"],
     "--stages-per-rank 2 needs a schedule with several stages per rank (interleaved1f1b)"),
    (["grid", "--schedules", "gpipe,interleaved1f1b", "--batch-size", "64", "--network", "default"],
     "64 micro-batches on 3 ranks do not split into 21"),
    (["run", "--local", "--schedule", "interleaved1f1b", "--batch-size", "16"],
     "interleaved1f1b splits the micro-batches into max(1, m // p) equal rounds, as torch's ScheduleInterleaved1F1B "
     "does: 16 micro-batches on 3 ranks do not split into 5"),
    (["run", "--local", "--schedule", "zbh1", "--stages-per-rank", "2"],
     "--stages-per-rank 2 needs a schedule with several stages per rank (interleaved1f1b)"),
    (["run", "--local", "--schedule", "interleaved1f1b", "--stages-per-rank", "3", "--batch-size", "6"],
     "--ranks x --stages-per-rank (3 x 3) must be at most the layers of --model cpu-small (6)"),
    (["validate", "--schedules", "1f1b,interleaved1f1b", "--batch-size", "16", "--out", "unused"],
     "interleaved1f1b splits the micro-batches into max(1, m // p) equal rounds, as torch's ScheduleInterleaved1F1B "
     "does: 16 micro-batches on 3 ranks do not split into 5"),
    (["validate", "--schedules", "1f1b,zbh1", "--stages-per-rank", "2", "--out", "unused"],
     "--stages-per-rank 2 needs a schedule with several stages per rank (interleaved1f1b)"),
])
def test_cli_refuses_in_one_line(argv, message, capsys):
    from loop.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_runtime_config_and_sweep_take_every_schedule():
    import argparse

    from runtime.cli import add_rank_args, check_rank_args

    ap = argparse.ArgumentParser()
    add_rank_args(ap)
    check_rank_args(ap.parse_args(["--schedule", "zbh1"]))  # the runtime runs them all
    check_rank_args(ap.parse_args(["--schedule", "interleaved1f1b", "--stages-per-rank", "3"]))
    from pipesim.cmd_sim import parse_schedules

    assert parse_schedules("gpipe,ZBH1") == ["gpipe", "zbh1"]
    assert parse_schedules("1f1b,zbh1,interleaved1f1b", runtime_only=True) == ["1f1b", "zbh1", "interleaved1f1b"]


def test_wrap_around_link_takes_link_1_0_unless_the_profile_lists_it():
    from pipesim.profile import Link

    base = uniform_profile(3, 1.0, 2.0)
    links = dict(base.links)
    links[(1, 0)] = Link(1, 0, 0.5, 1e30)  # the wrap-around 2 -> 0 (stage 2 -> 3) copies this one

    def hop(prof):
        tr = E.simulate(prof, "interleaved1f1b", 1, 3, stages_per_rank=2, steps=1, record=True).trace
        send = next(e for e in tr if e.action == "2SF0")
        recv = next(e for e in tr if e.action == "3RF0")
        return send.rank, recv.rank, recv.end - send.end

    assert hop(replace(base, links=links)) == (2, 0, pytest.approx(0.5))
    links[(2, 0)] = Link(2, 0, 0.25, 1e30)
    assert hop(replace(base, links=links)) == (2, 0, pytest.approx(0.25))
