"""Schedule generators, lowering, validator and text form."""

from pathlib import Path

import pytest

from pipesim import schedule as S

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.txt")), ids=lambda p: p.stem)
def test_golden(path):
    name, p, *rest = path.stem.split("_")
    v = int(rest.pop(0)[1:]) if rest[0].startswith("v") else 1  # <name>_p<ranks>[_v<stages per rank>]_m<mbs>
    m = rest.pop(0)
    ra = 0 if rest == ["recv", "ahead0"] else None
    got = S.build(name, int(p[1:]), int(m[1:]), recv_ahead=ra, stages_per_rank=v)
    assert S.to_text(got) == path.read_text(), f"schedule changed; if on purpose, regenerate {path.name}"


def test_1f1b_order_is_megatron():
    s = S.one_f_one_b(4, 8)
    assert " ".join(map(str, s[0][:5])) == "0F0 0F1 0F2 0F3 0B0"
    assert " ".join(map(str, s[3][:4])) == "3F0 3B0 3F1 3B1"
    assert " ".join(map(str, s[1][-3:])) == "1B5 1B6 1B7"


@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 2, 3, 8, 33])
def test_inflight_bounds(p, m):
    assert S.peak_inflight(S.gpipe(p, m)) == [m] * p
    assert S.peak_inflight(S.one_f_one_b(p, m)) == [min(p - r, m) for r in range(p)]


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize("ra", [None, 0, 1, 3])
def test_lowered_is_valid_and_roundtrips(name, ra):
    s = S.build(name, 4, 6, recv_ahead=ra)
    assert S.from_text(S.to_text(s)) == s
    for r, acts in enumerate(s):
        kinds = [a.kind for a in acts]
        assert kinds.count(S.Kind.F) == 6 and kinds.count(S.Kind.B) == 6
        assert kinds.count(S.Kind.SEND_F) == (6 if r < 3 else 0)
        assert kinds.count(S.Kind.RECV_B) == (6 if r < 3 else 0)


def test_action_text():
    a = S.Action.parse("12RB7")
    assert (a.stage, a.kind, a.mb, a.peer) == (12, S.Kind.RECV_B, 7, 13)
    assert str(a) == "12RB7"
    assert S.Action.parse("1SF0").tag == S.Action.parse("2RF0").tag
    for bad in ("F3", "0X3", "0F", "-1F2", "0 F 3x"):
        with pytest.raises(ValueError, match="cannot parse"):
            S.Action.parse(bad)


def bad(sched_text, m, match):
    with pytest.raises(ValueError, match=match):
        S.validate(S.from_text(sched_text), m)


def test_validator_messages_name_rank_and_position():
    good = S.to_text(S.build("gpipe", 2, 2))
    S.validate(S.from_text(good), 2)
    # backward before forward on rank 0
    bad("rank 0: 0RB0 0RB1 0B0 0F0 0SF0 0F1 0SF1 0B1\nrank 1: 1RF0 1RF1 1F0 1F1 1B0 1SB0 1B1 1SB1\n",
        2, r"rank 0, position 2 \(0B0\): backward before its forward")
    # forward before its receive is posted
    bad("rank 0: 0RB0 0RB1 0F0 0SF0 0F1 0SF1 0B0 0B1\nrank 1: 1F0 1RF0 1RF1 1F1 1B0 1SB0 1B1 1SB1\n",
        2, r"rank 1, position 0 \(1F0\): forward before its activation receive")
    # wrong stage on a rank
    bad("rank 0: 1F0\nrank 1: 1F0\n", 1, r"rank 0, position 0 \(1F0\): action of stage 1 on rank 0")
    # repeated action
    bad("rank 0: 0F0 0F0 0B0\n", 1, r"rank 0, position 1 \(0F0\): repeats position 0")
    # micro-batch out of range
    bad("rank 0: 0F0 0B0 0F1 0B1\n", 1, r"rank 0, position 2 \(0F1\): micro-batch 1 out of range")
    # missing backward
    bad("rank 0: 0F0\n", 1, r"rank 0: no B for micro-batch")
    # rank 0's send has no matching receive: rank 1 never posts 1RF0, which its forward needs
    bad("rank 0: 0RB0 0F0 0SF0 0B0\nrank 1: 1F0 1B0 1SB0\n", 1,
        r"rank 1, position 0 \(1F0\): forward before its activation receive is posted")
    # peer that does not exist
    bad("rank 0: 0F0 0SF0 0B0\n", 1, r"peer stage 1 does not exist")


def test_generator_errors():
    with pytest.raises(ValueError, match="unknown schedule 'zb'"):
        S.generate("zb", 2, 2)
    with pytest.raises(ValueError, match="num_stages"):
        S.gpipe(0, 2)
    with pytest.raises(ValueError, match="num_microbatches"):
        S.one_f_one_b(2, 0)
    with pytest.raises(ValueError, match="recv_ahead"):
        S.lower(S.gpipe(2, 2), recv_ahead=-1)
    with pytest.raises(ValueError, match="line 1"):
        S.from_text("rank 0: 0F0 zz\n")


# ----------------------------------------------------------------------------- virtual stages, split backward


def test_interleaved_order_is_torchs_and_megatrons():
    # torch's ScheduleInterleaved1F1B and Megatron-LM's interleaved schedule, p = 4, v = 2, m = 8: rank 0
    # warms up with (p - 1) * 2 + (v - 1) * p = 10 forwards, chunk by chunk in groups of p micro-batches
    # (tests/test_schedule_torch.py compares with torch's own order where torch is installed)
    s = S.interleaved_1f1b(4, 8, 2)
    assert " ".join(map(str, s[0][:12])) == "0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3 0F4 0F5 0F6 4B0"
    assert " ".join(map(str, s[3][:6])) == "3F0 3F1 3F2 3F3 7F0 7B0"  # (p-r-1)*2 + (v-1)*p = 4 warm-up
    assert " ".join(map(str, s[0][-4:])) == "0B4 0B5 0B6 0B7"
    # m == p: torch's order (Megatron-LM would run all forwards first)
    s = S.interleaved_1f1b(2, 2, 2)
    assert " ".join(map(str, s[1])) == "1F0 1F1 3F0 3B0 3F1 3B1 1B0 1B1"


@pytest.mark.parametrize("p", [1, 2, 3, 4])
@pytest.mark.parametrize("v", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("ra", [None, 0, 2])
def test_interleaved_is_valid_and_roundtrips(p, v, k, ra):
    m = k * p
    sched, pl = S.build_placed("interleaved1f1b", p, m, recv_ahead=ra, stages_per_rank=v)
    assert pl == S.loop_placement(p, v) == tuple(s % p for s in range(p * v))
    assert S.placement_of(sched) == pl
    assert S.from_text(S.to_text(sched)) == sched
    for r, acts in enumerate(sched):
        assert {a.stage for a in acts} == {s for s in range(p * v) if s % p == r}
        comm = [a for a in acts if not a.kind.is_compute]
        # p = 1: every neighbour is on the same rank, nothing is sent; else loop placement sends every hop
        assert len(comm) == (0 if p == 1 else 4 * m * v - 2 * m * ((r == 0) + (r == p - 1)))
    # v = 1 is plain 1F1B
    if v == 1:
        assert S.generate("interleaved1f1b", p, m, stages_per_rank=1) == S.one_f_one_b(p, m)
    else:  # rank r holds at most its warm-up forwards + 1 chunk activations: min((v - 1) p + 2 (p - 1 - r) + 1, m v)
        warm = [min((v - 1) * p + 2 * (p - 1 - r) + 1, m * v) for r in range(p)]
        assert S.peak_inflight(sched) == warm


def test_interleaved_refuses_other_microbatch_counts_in_one_line():
    with pytest.raises(ValueError, match=r"^interleaved1f1b splits the micro-batches into max\(1, m // p\) equal rounds, "
                                         r"as torch's ScheduleInterleaved1F1B does: 5 micro-batches on 2 ranks do not "
                                         r"split into 2 \(a multiple of the ranks always does\)$"):
        S.generate("interleaved1f1b", 2, 5, stages_per_rank=2)
    S.check_shape("interleaved1f1b", 4, 3)  # fewer micro-batches than ranks: one round, as torch
    S.check_shape("interleaved1f1b", 2, 5, stages_per_rank=1)  # v = 1 is 1F1B: any count
    with pytest.raises(ValueError, match="stages_per_rank must be a positive integer"):
        S.generate("interleaved1f1b", 2, 4, stages_per_rank=0)
    with pytest.raises(ValueError, match=r"schedule '1f1b' runs one stage per rank; stages_per_rank 2 needs interleaved1f1b"):
        S.build("1f1b", 2, 4, stages_per_rank=2)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("m", [1, 2, 3, 8, 33])
def test_zbh1_shape_and_memory(p, m):
    s = S.zbh1(p, m)
    S.validate(S.lower(s), m)
    for r, acts in enumerate(s):
        assert [a for a in acts if a.kind is not S.Kind.W] == S.one_f_one_b(p, m)[r]  # 1F1B's F and B order
        b = [a.mb for a in acts if a.kind is S.Kind.B]
        w = [a.mb for a in acts if a.kind is S.Kind.W]
        assert w == b == list(range(m))
    # activations held until W: at most 1F1B's peak on rank 0, min(p, m), on every rank
    assert S.peak_inflight(s) == [min(p, m)] * p


def test_zbh1_defers_w_by_rank():
    s = S.zbh1(3, 4)
    assert " ".join(map(str, s[0])) == "0F0 0F1 0F2 0B0 0W0 0F3 0B1 0W1 0B2 0W2 0B3 0W3"
    assert " ".join(map(str, s[2])) == "2F0 2B0 2F1 2B1 2F2 2B2 2W0 2F3 2B3 2W1 2W2 2W3"


def test_w_action_text_and_lowering():
    a = S.Action.parse("2W5")
    assert (a.stage, a.kind, a.mb, a.peer, a.kind.is_compute) == (2, S.Kind.W, 5, None, True)
    low = S.build("zbh1", 2, 2)
    assert [str(x) for x in low[1] if x.kind is S.Kind.W] == ["1W0", "1W1"]
    assert all(x.kind is not S.Kind.SEND_B or low[1][low[1].index(x) - 1].kind is S.Kind.B for x in low[1])


def test_message_tags_are_unique_and_legacy_with_one_stage_per_rank():
    for a in S.build("1f1b", 3, 4)[1]:
        if a.peer is not None:
            lo = a.stage if a.kind in (S.Kind.SEND_F, S.Kind.SEND_B) else a.peer
            assert S.message_tag(lo, a.mb, a.kind in (S.Kind.SEND_F, S.Kind.RECV_F), (0, 1, 2)) == a.tag
    pl = S.loop_placement(2, 3)
    seen = {}
    for s in range(len(pl)):
        for mb in range(4):
            for fwd, dst in ((True, s + 1), (False, s - 1)):
                if 0 <= dst < len(pl):
                    key = (pl[s], pl[dst], S.message_tag(s, mb, fwd, pl))
                    assert key not in seen, (s, mb, fwd, seen.get(key))
                    seen[key] = (s, mb, fwd)


def test_validator_with_placement_and_w():
    pl = (0, 1, 0, 1)
    good = S.build("interleaved1f1b", 2, 2, stages_per_rank=2)
    S.validate(good, 2, placement=pl)
    with pytest.raises(ValueError, match=r"rank 0, position 0 \(2RF0\): action of stage 2 on rank 0 \(placement: rank 1\)"):
        S.validate(good, 2, placement=(1, 0, 1, 0))
    with pytest.raises(ValueError, match=r"placement\[1\] must be a rank 0..1, got 5"):
        S.validate(good, 2, placement=(0, 5, 0, 1))
    with pytest.raises(ValueError, match=r"placement puts no stage on rank\(s\) \[1\]"):
        S.validate(good, 2, placement=(0, 0, 0, 0))
    # W before its own B; W for some micro-batches of a stage only
    bad("rank 0: 0F0 0W0 0B0\n", 1, r"rank 0, position 1 \(0W0\): weight gradient before its backward")
    bad("rank 0: 0F0 0F1 0B0 0W0 0B1\n", 2, r"rank 0: stage 0 splits the backward \(W\) but has no W for micro-batch\(es\) \[1\]")
    bad("rank 0: 0F0 0B0 0W0 0W0\n", 1, r"rank 0, position 3 \(0W0\): repeats position 2")


def test_stages_on_one_rank_exchange_nothing():
    # p = 1, v = 2: stage 1 follows stage 0 on the same rank; no sends, and the order is checked
    sched, pl = S.build_placed("interleaved1f1b", 1, 2, stages_per_rank=2)
    assert pl == (0, 0) and all(a.kind.is_compute for a in sched[0])
    with pytest.raises(ValueError, match=r"rank 0, position 0 \(1F0\): forward before stage 0's forward on the same rank"):
        S.validate(S.from_text("rank 0: 1F0 0F0 1B0 0B0\n"), 1, placement=(0, 0))
    with pytest.raises(ValueError, match=r"rank 0, position 2 \(0B0\): backward before stage 1's backward on the same rank"):
        S.validate(S.from_text("rank 0: 0F0 1F0 0B0 1B0\n"), 1, placement=(0, 0))
    with pytest.raises(ValueError, match=r"rank 0, position 1 \(0SF0\): peer stage 1 is on the same rank"):
        S.validate(S.from_text("rank 0: 0F0 0SF0 1F0 1B0 0B0\n"), 1, placement=(0, 0))


def test_placement_of_refuses_a_stage_on_two_ranks():
    with pytest.raises(ValueError, match=r"rank 1, position 0 \(0F0\): stage 0 also runs on rank 0"):
        S.placement_of(S.from_text("rank 0: 0F0\nrank 1: 0F0\n"))
    with pytest.raises(ValueError, match=r"no actions for stage\(s\) \[1\]"):
        S.placement_of(S.from_text("rank 0: 0F0\nrank 1: 2F0\n"))


def test_runtime_runs_every_schedule():
    assert S.RUNTIME_SCHEDULES == tuple(S.GENERATORS)
    for name in S.GENERATORS:
        S.check_runtime(name.upper())


def test_interleaved_default_is_two_stages_per_rank():
    assert S.generate("interleaved1f1b", 2, 4) == S.interleaved_1f1b(2, 4, 2)
    assert S.placement_for("interleaved1f1b", 2) == (0, 1, 0, 1) and S.placement_for("zbh1", 2) == (0, 1)
    assert S.stages_per_rank_of("gpipe") == 1 and S.stages_per_rank_of("interleaved1f1b", 3) == 3
