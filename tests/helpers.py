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


__all__ = ["uniform_profile", "Host"]
