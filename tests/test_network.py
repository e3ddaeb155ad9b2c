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
    ("delay -1ms", "delay must be a number >= 0 and <= 3600 s"),
    ("bandwidth 0", "bandwidth must be a number >= 1000 and <= 1e15 bit/s"),
    ("bandwidth -3Gbps", "bandwidth must be a number >= 1000"),
    ("bandwidth 1bps", "bandwidth must be a number >= 1000"),
    ("delay 99999999999999999999999999999ms", "delay must be a number >= 0 and <= 3600 s"),
    ("delay " + "9" * 5000 + "ms", r"delay must be .*\(5002 characters\)"),
    ("delay 1e400ms", "delay must be"),
    ("delay nan s", "cannot read delay"),
    ("delay inf ms", "cannot read delay"),
    ("bandwidth 2GBPS", "case-sensitive"),
    (";", "empty clause"),
    (";;;", "empty clause"),
    ("delay 1ms;", "empty clause"),
    ("delay 1ms;; bandwidth 1Gbps", "empty clause"),
    ("link 12345678-1 delay 1ms", "beyond 999999"),
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


@pytest.mark.parametrize("text,bps", [
    ("1MBps", 8e6), ("1 MB/s", 8e6), ("2KBps", 16e3), ("2kBps", 16e3), ("1GBps", 8e9), ("3Bps", None),
    ("1Mbps", 1e6), ("1mbps", 1e6), ("1mbit", 1e6), ("1Mbit/s", 1e6), ("1Mb/s", 1e6), ("5kbit", 5e3),
    ("1Tbps", 1e12), ("1gbit", 1e9), ("1e3kbps", 1e6), (".5Gbps", 5e8), ("1500bps", 1500.0),
])
def test_bandwidth_units_bits_and_bytes(text, bps):
    if bps is None:  # 24 bit/s: below the accepted range
        with pytest.raises(ValueError, match="bandwidth must be"):
            N.parse("bandwidth " + text)
        return
    assert N.parse("bandwidth " + text).uniform.bandwidth_bps == pytest.approx(bps)


def test_every_unit_of_the_table_parses():
    for unit, k in N._UNITS_RATE.items():
        n = 10000 if k < 1e9 else 10
        assert N.parse(f"bandwidth {n}{unit}").uniform.bandwidth_bps == pytest.approx(n * k)
    for unit, k in N._UNITS_TIME.items():
        assert N.parse(f"delay 1{unit.upper()}").uniform.delay_s == pytest.approx(k)


@pytest.mark.parametrize("text,match", [
    ("link 5-9 delay 1ms", "names link 5-9, but there are stages 0..2 only"),
    ("link 0-9 delay 1ms", "names link 0-9, but there are stages 0..2 only"),
    ("link 2->3 delay 1ms", "names link 2->3, but there are stages 0..2 only"),
    ("delay 1ms; link 0-2 bandwidth 1Gbps", "not pipeline neighbours; only neighbour links"),
    ("link 2->0 delay 1ms", "not pipeline neighbours"),
])
def test_check_stages(text, match):
    s = N.parse(text)
    with pytest.raises(ValueError, match=match):
        s.check_stages(3)
    if "neighbours" in match:
        s.check_stages(3, neighbours_only=False)  # the testbed shapes any pair of hosts


def test_check_stages_accepts_neighbours():
    N.parse("delay 1ms; link 0-1 delay 2ms; link 2->1 bandwidth 1Gbps").check_stages(3)
    N.parse("delay 1ms").check_stages(1)
    with pytest.raises(ValueError, match="one stage only"):
        N.parse("link 0-1 delay 1ms").check_stages(1)


@pytest.mark.parametrize("text", [",", "delay 1ms,", "delay 1ms,,bandwidth 1Gbps", " | "])
def test_grid_refuses_empty_items(text):
    with pytest.raises(ValueError, match="empty"):
        N.parse_grid(text)


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
