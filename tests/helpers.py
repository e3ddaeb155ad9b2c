"""Small builders shared by the tests."""

from pipesim.profile import Host, Link, Profile, Stage, StageCompute


def uniform_profile(p, f=1.0, b=2.0, latency=0.0, bandwidth=1e30, nbytes=0, window=None, opt=0.0,
                    host=None, mbs=(1,), backend="gloo"):
    """``p`` identical stages. The default bandwidth (1e30 bit/s: no limit) is for simulations in
    memory; a profile file holds at most ``limits.LINK_BANDWIDTH_BPS`` (1e15), so pass a real one to save it."""
    stages = tuple(
        Stage(compute={m: StageCompute(f * m, b * m, nbytes * m if s < p - 1 else 0, nbytes * m if s > 0 else 0)
                       for m in mbs}, optimizer_s=opt)
        for s in range(p))
    links = {}
    for s in range(p - 1):
        for a, c in ((s, s + 1), (s + 1, s)):
            links[(a, c)] = Link(a, c, latency, bandwidth, window)
    return Profile(stages=stages, links=links, host=host, device={"backend": backend})


def unpartitioned_reference(model: str, batch: int, steps: int, lr: float, stages: int = 1):
    """The unpartitioned model trained ``steps`` steps with SGD on the runtime's synthetic batches:
    (config, its parameters after one step, the losses). The runtime's tests compare against it."""
    import torch

    from runtime.model import build_stages, get_config, synthetic_batch

    cfg = get_config(model)
    full, _ = build_stages(cfg, stages, seed=0)
    opt = torch.optim.SGD(full.parameters(), lr=lr)
    losses, after_one = [], None
    for step in range(steps):
        idx, tgt = synthetic_batch(cfg, batch, step)
        loss = full(idx, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step == 0:
            after_one = {k: v.detach().clone() for k, v in full.state_dict().items()}
    return cfg, after_one, losses


__all__ = ["uniform_profile", "Host", "unpartitioned_reference"]
