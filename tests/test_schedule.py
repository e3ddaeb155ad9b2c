"""Schedule generators, lowering, validator and text form."""

from pathlib import Path

import pytest

from pipesim import schedule as S

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.txt")), ids=lambda p: p.stem)
def test_golden(path):
    name, p, m, *rest = path.stem.split("_")
    ra = 0 if rest == ["recv", "ahead0"] else None
    got = S.build(name, int(p[1:]), int(m[1:]), recv_ahead=ra)
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
