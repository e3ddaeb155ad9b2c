"""The simulated-only generators against torch.distributed.pipelining's own orders.

``interleaved1f1b`` is ``ScheduleInterleaved1F1B``'s compute order, and ``zbh1`` is the
order ``ScheduleInterleavedZeroBubble`` computes with one stage per rank. Torch builds
these orders in a private method of objects that need a process group; this test fills
in the few attributes that method reads, and is skipped where torch (or that method)
is missing. pipesim itself never imports torch.
"""

import pytest

from pipesim import schedule as S

torch_schedules = pytest.importorskip("torch.distributed.pipelining.schedules")

CODE = {"FORWARD": "F", "FULL_BACKWARD": "B", "BACKWARD_INPUT": "B", "BACKWARD_WEIGHT": "W"}


def torch_order(cls, p, v, m):
    o = object.__new__(cls)
    o.pp_group_size, o.n_local_stages, o._n_microbatches, o._num_stages = p, v, m, p * v
    o.number_of_rounds = max(1, m // p)
    o.microbatches_per_round = m // o.number_of_rounds
    out = []
    for r in range(p):
        o.rank = r
        try:
            ops = o._calculate_single_rank_operations(r)
        except AttributeError as e:  # another torch version reads other attributes
            pytest.skip(f"torch's schedule internals differ: {e}")
        out.append([f"{a.stage_index}{CODE[a.computation_type.name]}{a.microbatch_index}" for a in ops if a is not None])
    return out


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("v", [2, 3, 4])
def test_interleaved1f1b_is_torchs_order(p, v):
    for m in range(1, 4 * p + 3):
        if m % max(1, m // p):
            with pytest.raises(ValueError, match="equal rounds"):  # torch refuses these too
                S.interleaved_1f1b(p, m, v)
            continue
        ours = [[str(a) for a in acts] for acts in S.interleaved_1f1b(p, m, v)]
        assert ours == torch_order(torch_schedules.ScheduleInterleaved1F1B, p, v, m), (p, v, m)


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 8])
def test_zbh1_is_torchs_interleaved_zero_bubble_with_one_stage_per_rank(p):
    for m in range(1, 3 * p + 3):
        if m % max(1, m // p):
            continue  # torch refuses these; zbh1 takes any count
        ours = [[str(a) for a in acts] for acts in S.zbh1(p, m)]
        assert ours == torch_order(torch_schedules.ScheduleInterleavedZeroBubble, p, 1, m), (p, m)
