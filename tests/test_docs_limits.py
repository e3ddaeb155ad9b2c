"""docs/limits.md states the current table of pipesim/limits.py and the units of network settings."""

from pathlib import Path

import pytest

from pipesim import limits
from pipesim import network as N

DOC = Path(__file__).resolve().parent.parent / "docs" / "limits.md"


def test_docs_limits_has_the_generated_tables():
    text = DOC.read_text()
    assert limits.markdown() in text, "docs/limits.md is stale: paste the output of `python -m pipesim.limits`"
    assert N.units_markdown() in text, "docs/limits.md is stale: paste the output of `python -m pipesim.limits`"


@pytest.mark.parametrize("row", N.UNIT_TABLE, ids=[r[1] for r in N.UNIT_TABLE])
def test_the_unit_table_says_what_the_parser_does(row):
    quantity, units, each, _ = row
    value = float(each.split()[0])
    for unit in (u.strip() for u in units.split(",")):
        if unit == "...":
            continue
        if quantity == "delay":
            assert N.parse(f"delay 1{unit}").uniform.delay_s == pytest.approx(value)
            assert N.parse(f"delay 1{unit.upper()}").uniform.delay_s == pytest.approx(value)
        else:
            n = 1e4 / value if value < 1e3 else 10  # inside the accepted range
            assert N.parse(f"bandwidth {n:g}{unit}").uniform.bandwidth_bps == pytest.approx(n * value)
