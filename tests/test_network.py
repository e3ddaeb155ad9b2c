import pytest

from pipesim import network as N


@pytest.mark.parametrize("text,delay,bw", [
    ("default", None, None),
    ("delay 5ms", 5e-3, None),
    ("bandwidth 2Gbps", None, 2e9),
    ("delay 10ms bandwidth 1Gbps", 10e-3, 1e9),
    ("delay 5 ms", 5e-3, None),
    ("bandwidth 1 Gbit/s", None, 1e9),
    ("bandwidth 500Mbps", None, 500e6),
    ("DELAY 1.5ms   Bandwidth 100mbit", 1.5e-3, 100e6),
    ("delay 250us", 250e-6, None),
])
def test_parse(text, delay, bw):
    s = N.parse(text)
    ov = s.uniform
    assert (ov.delay_s, ov.bandwidth_bps) == (pytest.approx(delay) if delay else None, bw)


@pytest.mark.parametrize("text,match", [
    ("delay -1ms", "delay must be >= 0"),
    ("bandwidth 0", "bandwidth must be > 0"),
    ("bandwidth -3Gbps", "bandwidth must be > 0"),
    ("latency 5ms", "unknown word"),
    ("delay 5", "cannot read delay"),
    ("delay 5 parsecs", "unknown delay unit"),
    ("bandwidth 5GB", "unknown bandwidth unit"),
    ("delay 1ms delay 2ms", "given twice"),
    ("", "empty"),
    ("seed", "names a grid"),
    ("link 0-0 delay 1ms", "itself"),
    ("link 0-1", "neither delay nor bandwidth"),
])
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        N.parse(text)


def test_seed_grid_order_and_labels():
    g = N.parse_grid("seed")
    assert [s.label for s in g] == N.SEED_LABELS
    assert len(g) == 10
    assert g[0].is_default
    last = g[-1].uniform
    assert (last.delay_s, last.bandwidth_bps) == (pytest.approx(0.01), 1e9)
    assert g[7].uniform.bandwidth_bps == 5e9


def test_per_link_setting():
    s = N.parse("delay 2ms; link 1-2 bandwidth 100Mbps; link 0->1 delay 7ms")
    assert s.for_link(1, 2) == N.LinkOverride(2e-3, 100e6)
    assert s.for_link(2, 1) == N.LinkOverride(2e-3, 100e6)
    assert s.for_link(0, 1) == N.LinkOverride(7e-3, None)
    assert s.for_link(1, 0) == N.LinkOverride(2e-3, None)
    with pytest.raises(ValueError, match="differs per link"):
        _ = s.uniform


def test_custom_grid():
    g = N.parse_grid("default, delay 1ms | bandwidth 1Gbps")
    assert [x.label for x in g] == ["default", "delay 1ms", "bandwidth 1Gbps"]
