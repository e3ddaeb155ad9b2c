"""Real multi-process gloo runs of the runtime for the schedules of issue 14: ZB-H1 (split
backward: B = input gradient, W = weight gradient) and interleaved 1F1B (2 virtual stages
per rank, loop placement).

As for GPipe and 1F1B (tests/test_runtime.py): after one step every stage's parameters
equal the unpartitioned model's after one SGD step on the same batch (atol 1e-6, rtol
1e-5), the per-step losses equal the unpartitioned ones, every action of the lowered
schedule is traced once per step (W included, every virtual stage), and the simulator
replays the measured trace.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from helpers import unpartitioned_reference  # noqa: E402

from runtime.launch import run_local  # noqa: E402
from runtime.model import build_stages, get_config, split_layers, synthetic_batch  # noqa: E402

BATCH, LR, STEPS = 12, 0.5, 3


def _reference(model: str, mbs: int):
    return unpartitioned_reference(model, BATCH, STEPS, LR)


CASES = [  # schedule, ranks, stages per rank, model, micro-batch size
    ("zbh1", 2, 1, "tiny", 2),
    ("zbh1", 3, 1, "tiny", 2),
    ("interleaved1f1b", 2, 2, "tiny6", 3),
    ("interleaved1f1b", 3, 2, "tiny6", 2),
]


@pytest.mark.parametrize("schedule,ranks,v,model,mbs", CASES)
def test_pipeline_matches_unpartitioned(tmp_path, schedule, ranks, v, model, mbs):
    out, params = tmp_path / "results.json", tmp_path / "params"
    args = ["--model", model, "--schedule", schedule, "--batch-size", BATCH, "--micro-batch-size", mbs,
            "--optimizer", "sgd", "--lr", LR, "--warmup", 1, "--steps", STEPS - 1, "--out", out,
            "--trace", tmp_path / "trace", "--save-params", params, "--op-timeout", 60]
    if v > 1:
        args += ["--stages-per-rank", v]
    if ranks == 2:  # through the `pipesim run` verb
        from loop.cli import main

        assert main(["run", "--local", "--ranks", str(ranks), "--quiet", "--timeout", "120", "--log-dir",
                     str(tmp_path / "logs"), *map(str, args)]) == 0
    else:  # interleaved: also the NCCL posting path (recv_ahead 0, grouped posts), on gloo
        env = {"PIPESIM_GROUP_COMM": "1"} if v > 1 else {}
        if v > 1:
            args += ["--recv-ahead", 0]
        run_local("runtime", [str(a) for a in args], ranks, timeout_s=120, log_dir=tmp_path / "logs", echo=False,
                  env=env)
    cfg, after_one, ref_losses = _reference(model, mbs)
    num_stages = ranks * v
    for s, (a, _) in enumerate(split_layers(cfg.layers, num_stages)):
        got = torch.load(f"{params}.stage{s}.pt")
        assert got, f"stage {s} saved no parameters"
        for k, val in got.items():
            if k.startswith("blocks."):
                i, rest = k.split(".", 2)[1:]
                key = f"blocks.{a + int(i)}.{rest}"
            else:
                key = k
            torch.testing.assert_close(val, after_one[key], atol=1e-6, rtol=1e-5,
                                       msg=lambda m, s=s, k=k: f"stage {s} {k}: {m}")
    n_params = sum(len(torch.load(f"{params}.stage{s}.pt")) for s in range(num_stages))
    assert n_params == len(after_one)  # every parameter of the model is on exactly one stage
    res = json.loads(out.read_text())
    assert res["losses"] == pytest.approx(ref_losses, rel=1e-4)
    assert res["stages_per_rank"] == v and len(res["placement"]) == num_stages

    from pipesim.schedule import build_placed
    from pipesim.trace import read_csv

    events = read_csv(tmp_path / "trace.csv")
    sched, placement = build_placed(schedule, ranks, BATCH // mbs, stages_per_rank=v,
                                    recv_ahead=0 if (v > 1 and ranks == 3) else None)
    assert res["placement"] == list(placement)
    for r in range(ranks):
        got = [e.action for e in events if e.rank == r and e.step == 2 and e.action != "OPT"]
        assert sorted(got) == sorted(str(a) for a in sched[r])  # every action traced once per step
    kinds = {e.kind for e in events}
    assert ("W" in kinds) == (schedule == "zbh1")
    assert {int(e.action[:-1].rstrip("FBWSR") or 0) for e in events if e.kind == "F"} == set(range(num_stages))

    # the simulator replays the measured trace (its own compute, the profile's links)
    from pipesim.replay import replay
    from tests.helpers import uniform_profile

    rp = replay(uniform_profile(ranks, mbs=(mbs,)), events, schedule, mbs, BATCH, warmup=1, stages_per_rank=v)
    assert rp.step_time > 0 and rp.steps == STEPS


@pytest.mark.parametrize("index", [1, 2])
def test_split_backward_is_exact_in_process(index):
    """runtime.split: B then W give the gradients of a plain backward on a middle and on the last
    stage (one process, no pipeline); B leaves every .grad alone and sets the input's; no hook
    outlives the recorded forward; twice accumulates as two backwards do."""
    from runtime.split import SplitBackward

    cfg = get_config("tiny")
    _, stages = build_stages(cfg, 3, seed=0)
    _, targets = synthetic_batch(cfg, 2, 0)
    st = stages[index]
    x = torch.randn(2, cfg.seq_len, cfg.d_model, requires_grad=True)
    last = st.is_last
    g = None if last else torch.randn(2, cfg.seq_len, cfg.d_model)

    def fwd():
        return st(x, targets) if last else st(x)

    for _ in range(2):
        torch.autograd.backward(fwd(), g)
    ref = {n: p.grad.clone() for n, p in st.named_parameters()}
    ref_dx = x.grad.clone()
    st.zero_grad(set_to_none=True)
    x.grad = None
    sb = SplitBackward(st)
    assert len(sb.linears) == (1 if last else 0) + 4 * len(st.blocks)
    for i in range(2):
        out, tape = sb.forward(fwd)
        assert len(tape) == len(sb.linears)
        assert all(not m._forward_hooks for m in sb.linears)  # the hooks are gone after the forward
        before = [None if p.grad is None else p.grad.clone() for p in st.parameters()]
        pending = sb.input_grad(out, g, x, tape)
        for b, p in zip(before, st.parameters()):  # B leaves the weights alone
            assert (p.grad is None) if b is None else torch.equal(p.grad, b)
        assert i == 1 or all(b is None for b in before)
        sb.weight_grad(pending)
        assert not pending.linear and not pending.other
    torch.testing.assert_close(x.grad, ref_dx)
    for n, p in st.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


def test_validate_measures_zbh1_and_interleaved(tmp_path):
    """validate takes zbh1 and interleaved1f1b: it calibrates B and W (--split-backward) and the
    virtual stages (--stages-per-rank 2), measures each cell with the runtime, replays its
    trace and compares it with the simulation; pipesim compare reads the cells back."""
    from loop import validate as V
    from loop.compare import compare
    from pipesim import profile as P

    V.validate(tmp_path, model="tiny6", ranks=2, networks="default", micro_batch_sizes=(1,),
               schedules=("zbh1", "interleaved1f1b"), batch_size=4, steps=2, warmup=1, window_probe=None,
               calibrate_repeats=3, repeats=1, tiebreak_pct=None, cell_timeout_s=120, retries=0, figures=None,
               stages_per_rank=2)
    prof = P.load(tmp_path / "profile.json")
    assert all(st.compute[1].backward_input_s and st.compute[1].backward_weight_s for st in prof.stages)
    assert all(st.virtual_stages is not None and len(st.virtual_stages) == 2 for st in prof.stages)
    comp = json.loads((tmp_path / "comparison.json").read_text())
    assert [c["schedule"] for c in comp["cells"]] == ["zbh1", "interleaved1f1b"]
    assert all(c["simulated_s"] > 0 for c in comp["cells"])
    assert comp["cells"][1]["stages_per_rank"] == 2
    runs = V.load_runs(tmp_path / "measured.jsonl")
    assert all(r["replay_s"] > 0 for by in runs.values() for r in by.values())
    res = json.loads((tmp_path / next(iter(runs["interleaved1f1b|default|1"].values()))["results"]).read_text())
    assert res["stages_per_rank"] == 2
    # the same cells, read back from measured.jsonl, simulate the same
    again = compare([tmp_path / "measured.jsonl"], tmp_path / "profile.json", out=tmp_path / "again")
    assert again is not None
    doc = json.loads((tmp_path / "again" / "comparison.json").read_text())
    assert {c["schedule"]: c["simulated_s"] for c in doc["cells"]} == pytest.approx(
        {c["schedule"]: c["simulated_s"] for c in comp["cells"]}, rel=1e-9)
