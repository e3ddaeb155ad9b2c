"""``pipesim compare`` and its readers (loop/measured.py, loop/compare.py); no torch.

Every format is read from small hand-made files; the simulated side comes from a
2-stage uniform profile whose step times are known by hand ((m + p - 1) (f + b) with
no network cost), or from the bundled GPT-3 small estimate for the seed's table.
"""

from __future__ import annotations

import json
import re

import pytest

from loop import compare as C
from loop import measured as M
from loop import report as R
from loop import validate as V
from loop.cli import main
from pipesim import engine as E
from pipesim import network as N
from pipesim import profile as P
from tests.helpers import uniform_profile

F, B, STAGES, BATCH = 0.1, 0.2, 2, 4
SEED_CELL = "delay 10ms  bandwidth 1Gbps"

# the seed's two tables (../shared/seed/gpt3_small_results_template.md), as filled in so far
SEED = """## Result GPT-3 Small

- max batch size (due to DRAM limits): 64

### Gpipe based pipeline
| Network setting                     | Micro batch size: 1 | Micro batch size: 2 | Micro batch size: 4 |
|-------------------------------------|---------------------|---------------------|---------------------|
| default (about 0.1ms; up to 10Gbps) | s | s | s                   |
| delay 1ms                           | s | s | s                   |
| delay 5ms                           | s | s | s                   |
| delay 10ms                          | s | s | s                   |
| bandwidth 5Gbps                     | s | s | s                   |
| bandwidth 2Gbps                     | s | s | s                   |
| bandwidth 1Gbps                     | s | s | s                   |
| delay 1ms  bandwidth 5Gbps          | s | s | s                   |
| delay 5ms  bandwidth 2Gbps          | s | s | s                   |
| delay 10ms  bandwidth 1Gbps         | s | s | 8.97 s              |
### 1F1B based pipeline
| Network setting                     | Micro batch size: 1 | Micro batch size: 2 | Micro batch size: 4 |
|-------------------------------------|---|---|---------------------|
| default (about 0.1ms; up to 10Gbps) | s | s | s                   |
| delay 1ms                           | s | s | s                   |
| delay 5ms                           | s | s | s                   |
| delay 10ms                          | s | s | s                   |
| bandwidth 5Gbps                     | s | s | s                   |
| bandwidth 2Gbps                     | s | s | s                   |
| bandwidth 1Gbps                     | s | s | s                   |
| delay 1ms  bandwidth 5Gbps          | s | s | s                   |
| delay 5ms  bandwidth 2Gbps          | s | s | s                   |
| delay 10ms  bandwidth 1Gbps         | s | s | 11.s                |
"""


def by_hand(mbs: int) -> float:
    """The uniform profile's step time: (m + p - 1) forward-backward slots of one micro-batch."""
    return (BATCH // mbs + STAGES - 1) * (F + B) * mbs


@pytest.fixture
def prof_path(tmp_path):
    path = tmp_path / "profile.json"
    uniform_profile(STAGES, f=F, b=B, mbs=(1, 2), bandwidth=1e15).save(path)
    return path


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("unreadable", ["11.s", "11.x s"])
def test_seed_markdown_reads_the_filled_cell_and_says_what_it_skipped(tmp_path, unreadable):
    path = tmp_path / "seed.md"
    path.write_text(SEED.replace("11.s ", unreadable + " "))
    notes: list[str] = []
    cells = M.read([path], batch_size=64, notes=notes)
    assert [(c["schedule"], c["network"], c["micro_batch_size"], c["batch_size"], c["measured_s"]) for c in cells] \
        == [("gpipe", SEED_CELL, 4, 64, 8.97)]
    assert notes == [f"{path}: skipped 58 unfilled cells, 1 unreadable ('{unreadable}' at 1F1B, {SEED_CELL}, mbs 4)"]


def test_seed_markdown_compared_with_the_bundled_estimate(tmp_path):
    path = tmp_path / "seed.md"
    path.write_text(SEED)
    lines, summ, written = C.compare([path], batch_size=64)
    assert written == []
    sim = E.simulate(P.load(None), "gpipe", 4, 64, N.seed_setting(SEED_CELL), steps=C.SIM_STEPS,
                     record=False).step_time
    err = 100 * abs(sim - 8.97) / 8.97
    assert lines[-1] == f"MAPE: gpipe {err:.1f}%, worst {err:.1f}% (gpipe, {SEED_CELL}, mbs 4)"
    assert "Compared 1 cell (gpipe 1)." in lines
    assert any("skipped 58 unfilled cells, 1 unreadable ('11.s' at 1F1B" in x for x in lines)


def test_markdown_needs_the_batch_size_and_a_schedule_heading(tmp_path):
    path = tmp_path / "seed.md"
    path.write_text(SEED)
    with pytest.raises(ValueError, match="pass --batch-size"):
        M.read([path])
    path.write_text(SEED.split("### 1F1B")[0].replace("### Gpipe based pipeline", "### Results"))
    with pytest.raises(ValueError, match="outside a schedule heading \\('### Gpipe ...', '### 1F1B ...', "):
        M.read([path], batch_size=64)
    path.write_text("### 1F1B\n| Network setting | Micro batch size: 2 |\n|---|---|\n| delay 5ms | 850 ms |\n"
                    "| default | 0.5 |\n| bandwidth 1Gbps | s |\n")
    cells = M.read([path], batch_size=8)
    assert [(c["schedule"], c["network"], c["measured_s"]) for c in cells] == [("1f1b", "delay 5ms", 0.85),
                                                                                ("1f1b", "default", 0.5)]
    path.write_text("### 1F1B\n| Network setting | Micro batch size: 2 |\n|---|---|\n| delay 5ms | s |\n")
    with pytest.raises(ValueError, match="no filled cell"):
        M.read([path], batch_size=8)


def test_markdown_of_every_schedule_pipesim_grid_writes_is_read_as_that_schedule(tmp_path):
    from pipesim.cmd_sim import SCHEDULE_TITLES, markdown_tables

    nets = [N.parse("default"), N.parse("delay 5ms")]
    values = {(s, n.label, m): 1.0 + i for i, s in enumerate(SCHEDULE_TITLES) for n in nets for m in (1, 2)}
    path = tmp_path / "grid.md"
    path.write_text(markdown_tables(values, nets, [1, 2], list(SCHEDULE_TITLES)))
    cells = M.read([path], batch_size=8)
    # "### Interleaved 1F1B based pipeline" is interleaved1f1b (not 1f1b), "### ZB-H1 ..." is zbh1
    assert {(c["schedule"], c["measured_s"]) for c in cells} == {(s, 1.0 + i) for i, s in enumerate(SCHEDULE_TITLES)}
    assert len(cells) == 4 * 2 * 2


CSV_HEAD = "schedule,network,micro_batch_size,batch_size,step_time_s,step_time_p10_s,step_time_p90_s\n"


def test_csv_rows_of_one_cell_are_runs(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(CSV_HEAD + "gpipe,default,1,4,1.2,1.1,1.3\nGPipe, default ,1,4,1.3,1.2,1.4\n"
                    "1f1b,delay 5ms,2,4,2.0,,\n")
    cells = M.read([path])
    assert len(cells) == 2
    a, b = cells
    assert a["runs_s"] == [1.2, 1.3] and a["measured_s"] == pytest.approx(1.25)
    assert (a["measured_lo_s"], a["measured_hi_s"]) == pytest.approx((1.15, 1.35))
    assert b["measured_lo_s"] is None and b["step_spread_pct"] is None and b["source"] == str(path)


def test_csv_from_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("\ufeff" + CSV_HEAD + "gpipe,default,1,4,1.5,,\r\n", encoding="utf-8")
    assert M.read([path])[0]["measured_s"] == 1.5


def test_csv_without_batch_column_takes_the_flag(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("schedule,network,micro_batch_size,step_time_s\ngpipe,default,1,1.5\n")
    with pytest.raises(ValueError, match=r"lacks column batch_size \(or pass --batch-size\)"):
        M.read([path])
    assert M.read([path], batch_size=4)[0]["batch_size"] == 4


@pytest.mark.parametrize("text, msg", [
    ("schedule,network,micro_batch_size,batch_size\ngpipe,default,1,4\n", "lacks column step_time_s"),
    ("schedule,network,mbs,batch_size,time\n", "lacks columns micro_batch_size, step_time_s"),
    (CSV_HEAD + "gpipe,default,1,4,1.5,,\ngpipe,default,two,4,1.5,,\n", "row 2 (line 3), column micro_batch_size: 'two'"),
    (CSV_HEAD + "gpipe,default,1,4,1.5s,,\n", "row 1 (line 2), column step_time_s: '1.5s' is not a time"),
    (CSV_HEAD + "gpipe,default,1,4,-1,,\n", "column step_time_s: '-1' is not a positive"),
    (CSV_HEAD + "gpipe,default,1,4,nan,,\n", "column step_time_s: 'nan' is not a positive"),
    (CSV_HEAD + "zb,default,1,4,1,,\n", "row 1 (line 2), column schedule: unknown schedule 'zb'"),
    (CSV_HEAD, "no rows under the header"),
])
def test_bad_csv_names_the_column_and_row(tmp_path, text, msg):
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(msg)):
        M.read([path])


def _sim(prof, schedule, mbs, v):
    return E.simulate(prof, schedule, mbs, BATCH, N.parse("default"), steps=C.SIM_STEPS, record=False,
                      stages_per_rank=v).step_time


def test_csv_stages_per_rank_column_sets_the_interleaved_cells(tmp_path, prof_path):
    prof = P.load(prof_path)
    path = tmp_path / "m.csv"
    path.write_text(CSV_HEAD.rstrip("\n") + ",stages_per_rank\n"
                    "interleaved1f1b,default,1,4,1.0,,,3\n"   # 3 stages per rank
                    "interleaved1f1b,default,2,4,1.0,,,\n"    # empty: the default, 2
                    "gpipe,default,1,4,1.0,,,1\n"             # 1 is every schedule's
                    "zbh1,default,1,4,1.0,,,\n")
    cells = M.read([path])
    assert [c.get("stages_per_rank") for c in cells] == [3, None, None, None]
    rows = C.build_rows(prof, cells)
    assert [r["simulated_s"] for r in rows] == pytest.approx(
        [_sim(prof, "interleaved1f1b", 1, 3), _sim(prof, "interleaved1f1b", 2, 2), _sim(prof, "gpipe", 1, 1),
         _sim(prof, "zbh1", 1, 1)])
    assert _sim(prof, "interleaved1f1b", 1, 3) != pytest.approx(_sim(prof, "interleaved1f1b", 1, 2))
    assert rows[0]["stages_per_rank"] == 3
    # the same cell at 2 and at 3 stages per rank are two cells
    path.write_text("schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
                    "interleaved1f1b,default,1,4,1.0,2\ninterleaved1f1b,default,1,4,1.5,3\n")
    assert [(c["stages_per_rank"], c["runs_s"]) for c in M.read([path])] == [(2, [1.0]), (3, [1.5])]


def test_markdown_stages_per_rank_column_sets_the_interleaved_cells(tmp_path, prof_path):
    prof = P.load(prof_path)
    path = tmp_path / "m.md"
    path.write_text("### Interleaved 1F1B based pipeline\n"
                    "| Network setting | Stages per rank | Micro batch size: 1 | Micro batch size: 2 |\n|---|---|---|---|\n"
                    "| default | 3 | 1.0 s | 2.0 s |\n| delay 5ms |  | 1.0 s | s |\n"
                    "### Gpipe based pipeline\n| Network setting | stages_per_rank | Micro batch size: 1 |\n|---|---|---|\n"
                    "| default | 1 | 1.0 s |\n")
    cells = M.read([path], batch_size=BATCH)
    assert [(c["schedule"], c["network"], c["micro_batch_size"], c.get("stages_per_rank")) for c in cells] == [
        ("interleaved1f1b", "default", 1, 3), ("interleaved1f1b", "default", 2, 3),
        ("interleaved1f1b", "delay 5ms", 1, None), ("gpipe", "default", 1, None)]
    assert C.build_rows(prof, cells)[0]["simulated_s"] == pytest.approx(_sim(prof, "interleaved1f1b", 1, 3))


@pytest.mark.parametrize("name, text, msg", [
    ("m.csv", "schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\ngpipe,default,1,4,1,2\n",
     "m.csv, row 1 (line 2), column stages_per_rank: 2 stages per rank given for gpipe, which runs one stage per "
     "rank; leave it empty or write 1 (several stages per rank: interleaved1f1b)"),
    ("m.csv", "schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
              "interleaved1f1b,default,1,4,1,two\n", "column stages_per_rank: 'two' is not a positive integer"),
    ("m.csv", "schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
              "interleaved1f1b,default,1,4,1,0\n", "column stages_per_rank: '0' is not a positive integer"),
    ("m.md", "### 1F1B\n| Network setting | Stages per rank | Micro batch size: 1 |\n|---|---|---|\n| default | 2 | 1 s |\n",
     "m.md, line 4, column 'Stages per rank': 2 stages per rank given for 1f1b, which runs one stage per rank"),
])
def test_stages_per_rank_where_no_schedule_takes_it_is_refused_in_one_line(tmp_path, prof_path, capsys, name,
                                                                          text, msg):
    path = tmp_path / name
    path.write_text(text)
    rc = main(["compare", "--profile", str(prof_path), "--measured", str(path), "--batch-size", str(BATCH)])
    err = _err(capsys)
    assert rc == 2 and err.startswith("pipesim compare: error: ") and msg in err, err


def test_grid_writes_stages_per_rank_and_compare_reads_it_back(tmp_path, prof_path, capsys):
    grid = ["grid", "--profile", str(prof_path), "--network", "default,delay 5ms", "--micro-batch-sizes", "1,2",
            "--schedules", "gpipe,interleaved1f1b", "--stages-per-rank", "4", "--batch-size", str(BATCH)]
    assert main(grid + ["--csv", str(tmp_path / "g.csv"), "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    (tmp_path / "g.md").write_text(out)
    assert "| Network setting | Stages per rank | Micro batch size: 1 | Micro batch size: 2 |" in out
    assert "| Network setting | Micro batch size: 1 | Micro batch size: 2 |" in out   # gpipe's: no column
    doc = json.loads((tmp_path / "g.json").read_text())
    assert {(c["schedule"], c["stages_per_rank"]) for c in doc["cells"]} == {("gpipe", 1), ("interleaved1f1b", 4)}
    # read back, each cell is simulated at the stages per rank it was written with: no error but rounding
    for name in ("g.csv", "g.md"):
        assert main(["compare", "--profile", str(prof_path), "--measured", str(tmp_path / name),
                     "--batch-size", str(BATCH)]) == 0
        printed = capsys.readouterr().out
        last = printed.strip().splitlines()[-1]
        worst = float(re.search(r"worst (\S+)%", last).group(1))
        assert worst <= (0.0 if name == "g.csv" else 1.0), (name, last)
        # the comparison table says the v each interleaved cell was read (and simulated) with
        assert printed.count("| interleaved1f1b (v 4) | ") == 4 and printed.count("| gpipe | ") == 4, printed


def _result(path, schedule="gpipe", mbs=1, median=1.4, ranks=STAGES, network=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "pipesim-run", "version": 1, "model": {"name": "tiny"}, "schedule": schedule, "ranks": ranks,
           "micro_batch_size": mbs, "batch_size": BATCH, "network": network,
           "step_time": {"median": median, "p10": median - 0.1, "p90": median + 0.1, "n": 5, "samples": []}}
    path.write_text(json.dumps(doc))
    return path


def test_run_results_a_file_or_a_folder(tmp_path):
    one = _result(tmp_path / "runs" / "a" / "run0" / "results.json", median=1.4)
    _result(tmp_path / "runs" / "a" / "run1" / "results.json", median=1.6)
    _result(tmp_path / "runs" / "b" / "my_results.json", schedule="1f1b", mbs=2, median=2.0, network="delay 5ms")
    (tmp_path / "runs" / "profile.json").write_text("{}")   # not *results*: not read
    assert [c["runs_s"] for c in M.read([one])] == [[1.4]]
    cells = M.read([tmp_path / "runs"])
    assert [(c["schedule"], c["network"], c["micro_batch_size"], c["runs_s"]) for c in cells] == [
        ("gpipe", "default", 1, [1.4, 1.6]), ("1f1b", "delay 5ms", 2, [2.0])]
    assert cells[0]["measured_s"] == pytest.approx(1.5) and cells[0]["ranks"] == STAGES
    assert cells[0]["measured_lo_s"] == pytest.approx(1.4)
    with pytest.raises(ValueError, match="not a 'pipesim run' result file"):
        M.read([tmp_path / "runs" / "profile.json"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \*results\*.json file"):
        M.read([tmp_path / "empty"])


def _jsonl_rec(s, net, m, run, median):
    return {"key": f"{s}|{net}|{m}", "run": run, "schedule": s, "network": net, "micro_batch_size": m,
            "batch_size": BATCH, "median": median, "p10": median * 0.9, "p90": median * 1.1, "n": 5}


def test_measured_jsonl_two_runs_per_cell_give_their_median(tmp_path):
    path = tmp_path / "measured.jsonl"
    recs = [_jsonl_rec("gpipe", "default", 1, 0, 1.2), _jsonl_rec("1f1b", "default", 1, 0, 1.0),
            _jsonl_rec("1f1b", "default", 1, 1, 3.0), _jsonl_rec("gpipe", "default", 1, 1, 9.9),
            _jsonl_rec("gpipe", "default", 1, 1, 1.4)]   # the same run again: the later line wins
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"key": "gpipe|def')
    notes: list[str] = []
    cells = M.read([path], notes=notes)
    assert [(c["schedule"], c["runs_s"]) for c in cells] == [("gpipe", [1.2, 1.4]), ("1f1b", [1.0, 3.0])]
    assert cells[0]["measured_s"] == pytest.approx(1.3) and cells[1]["measured_s"] == pytest.approx(2.0)
    assert cells[0]["step_spread_pct"] == pytest.approx(10.0)
    assert notes == [f"{path}: skipped 1 unreadable line (6; cut by a crash?)"]
    path.write_text(json.dumps({**recs[0], "median": "fast"}) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 1, median: 'fast'")):
        M.read([path])


def test_runs_of_one_cell_in_several_files_are_joined(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text(CSV_HEAD + "gpipe,default,1,4,1.0,,\n")
    res = _result(tmp_path / "r" / "results.json", median=2.0)
    cells = M.read([csv, res])
    assert len(cells) == 1 and cells[0]["runs_s"] == [1.0, 2.0] and cells[0]["source"] == f"{csv}; {res}"


def test_format_from_the_suffix(tmp_path):
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match=r"cannot tell the format from the suffix '.txt'; use one of .jsonl"):
        M.read([tmp_path / "m.txt"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        M.read([tmp_path / "nope.csv"])


# ----------------------------------------------------------------------------- the comparison


GOOD_CSV = (CSV_HEAD
            + "gpipe,default,1,4,1.2,,\ngpipe,default,1,4,1.3,,\n"  # two runs: 1.25 -> +20%
            + "gpipe,default,2,4,2.0,,\n"                             # -10%
            + "1f1b,default,1,4,1.0,0.9,1.1\n"                        # +50%
            + "1f1b,default,2,4,2.0,1.9,2.1\n")                       # -10%


def test_mape_line_is_last_and_matches_a_hand_computation(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    lines, summ, _ = C.compare([path], prof_path)
    assert lines[-1] == "MAPE: gpipe 15.0%, 1f1b 30.0%, worst 50.0% (1f1b, default, mbs 1)"
    assert summ.mape == pytest.approx({"gpipe": 15.0, "1f1b": 30.0})
    prof = P.load(prof_path)
    rows = C.build_rows(prof, M.read([path]))
    assert [r["simulated_s"] for r in rows] == pytest.approx([by_hand(1), by_hand(2), by_hand(1), by_hand(2)])
    assert rows[0]["noise_pct"] == pytest.approx(100 * 0.1 / 1.2) and rows[1]["noise_pct"] is None
    assert "Compared 4 cells (gpipe 2, 1f1b 2)." in lines
    assert "\n| gpipe | default | 1 | 1.500 | 1.250 | +20.0% | 8.3% |\n" in "\n".join(lines)


def test_cells_the_profile_cannot_simulate_are_skipped_with_the_reason(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV + "gpipe,default,8,64,5,,\ngpipe,delay fast,1,4,1,,\ngpipe,link 0-2 delay 5ms,1,4,1,,\n"
                    "gpipe,default,1,8,3,,\ngpipe,default,2,5,3,,\n")
    res = _result(tmp_path / "r" / "results.json", ranks=3, network="delay 1ms")
    skipped: list[str] = []
    rows = C.build_rows(P.load(prof_path), M.read([path, res]), skipped=skipped)
    assert len(rows) == 5   # the four good cells and batch 8
    assert skipped == [
        "gpipe, default, mbs 8, batch 64: the profile has no compute times for micro-batch size 8 (it has 1, 2)",
        "gpipe, delay fast, mbs 1, batch 4: network setting 'delay fast': cannot read delay 'fast'; write e.g. 5ms",
        "gpipe, link 0-2 delay 5ms, mbs 1, batch 4: the network names link 0-2; the profile's 2 stages are "
        "joined by 0-1 only",
        "gpipe, default, mbs 2, batch 5: batch size 5 is not a multiple of micro-batch size 2",
        "gpipe, delay 1ms, mbs 1, batch 4: measured on 3 ranks; the profile has 2 stages"]
    lines, _, _ = C.compare([path, res], prof_path, batch_size=4)
    assert "Skipped gpipe, default, mbs 1, batch 8: measured at batch 8, not --batch-size 4." in lines
    assert lines[-1].startswith("MAPE: gpipe 15.0%, 1f1b 30.0%")


def test_seed_labels_with_collapsed_spaces_are_the_seed_settings():
    assert C.setting_of("delay 10ms bandwidth 1Gbps").clauses == N.seed_setting(SEED_CELL).clauses
    assert C.setting_of("default (about 0.1ms; up to 10Gbps)").is_default
    assert C.setting_of("default (about 0.1ms; up to 10Gbps)").label == N.SEED_LABELS[0]


def test_the_table_takes_more_columns(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    rows = C.build_rows(P.load(prof_path), M.read([path]))
    for r in rows:
        r["other_s"] = r["measured_s"] * 1.01
    lines = C.render("# t", [], rows, [], R.summarize(rows),
                     columns=[("other error", lambda r: f"{100 * (r['other_s'] / r['measured_s'] - 1):+.1f}%")])
    table = lines[3].splitlines()
    assert table[0].endswith("| runs apart | other error |") and table[1].endswith("---:|---:|")
    assert all(line.endswith("| +1.0% |") for line in table[2:])


def test_replay_and_drift_get_their_columns_and_lines_before_the_mape_line(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    rows = C.build_rows(P.load(prof_path), M.read([path]))
    for i, r in enumerate(rows):
        r["replay_s"] = r["measured_s"] * (1.02 if i else 0.95)
        r["drift_pct"] = float(i)
    summ = R.summarize(rows)
    lines = C.render("# t", [], rows, [], summ)
    table = lines[3].splitlines()
    assert "| replay s | replay err | drift |" in table[0]
    assert "| -5.0% |" in table[2]
    assert lines[-1].startswith("MAPE: ")
    assert lines[-2].startswith("Replay MAPE (each run with its own compute): ")
    assert "worst 5.0%" in lines[-2]
    assert lines[-3].startswith("Machine speed during the runs")


GOOD_TABLE = """\
| schedule | network setting | mbs | simulated s | measured s (spread) | error | runs apart |
|---|---|---:|---:|---:|---:|---:|
| gpipe | default | 1 | 1.500 | 1.250 | +20.0% | 8.3% |
| gpipe | default | 2 | 1.800 | 2.000 | -10.0% | |
| 1f1b | default | 1 | 1.500 | 1.000 (0.900-1.100) | +50.0% | |
| 1f1b | default | 2 | 1.800 | 2.000 (1.900-2.100) | -10.0% | |"""


def test_a_table_without_interleaved_rows_is_as_it_was(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    assert R.comparison_table(C.build_rows(P.load(prof_path), M.read([path]))) == GOOD_TABLE


def test_interleaved_rows_say_their_stages_per_rank(tmp_path, prof_path):
    """Two cells of interleaved 1F1B that differ only in v are told apart in the table; a
    cell whose file left v out shows the default it was simulated with; the other schedules'
    rows, and the columns, are as without interleaved rows."""
    prof = P.load(prof_path)
    path = tmp_path / "m.csv"
    path.write_text("schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
                    "interleaved1f1b,default,1,4,1.0,3\n"
                    "interleaved1f1b,default,1,4,1.1,4\n"
                    "interleaved1f1b,default,2,4,1.2,\n"   # empty: the default, 2
                    "gpipe,default,1,4,1.5,1\n")
    rows = C.build_rows(prof, M.read([path]))
    table = R.comparison_table(rows).splitlines()
    assert table[:2] == ["| schedule | network setting | mbs | simulated s | measured s (spread) | error |",
                         "|---|---|---:|---:|---:|---:|"]
    assert [line.split(" | ")[0] for line in table[2:]] == [
        "| interleaved1f1b (v 3)", "| interleaved1f1b (v 4)", "| interleaved1f1b (v 2)", "| gpipe"]
    assert [R.stages_of(r) for r in rows] == [3, 4, 2, 1]
    assert table[2] == (f"| interleaved1f1b (v 3) | default | 1 | {_sim(prof, 'interleaved1f1b', 1, 3):.3f} | 1.000 | "
                        f"{100 * (_sim(prof, 'interleaved1f1b', 1, 3) - 1.0):+.1f}% |")
    assert table[5].startswith("| gpipe | default | 1 | ")


def test_mape_and_figure_keep_cells_of_different_v_apart(tmp_path, prof_path):
    """A schedule measured at two v: one MAPE per v (a schedule at one v keeps its plain name),
    the worst cell named with its v, and one group of bars per v in the figure."""
    from pipesim import plots

    prof = P.load(prof_path)
    path = tmp_path / "m.csv"
    path.write_text("schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
                    "interleaved1f1b,default,1,4,1.0,3\n"
                    "interleaved1f1b,default,1,4,9.0,4\n"
                    "gpipe,default,1,4,1.5,1\n")
    rows = C.build_rows(prof, M.read([path]))
    summ = R.summarize(rows)
    assert list(summ.mape) == ["interleaved1f1b (v 3)", "interleaved1f1b (v 4)", "gpipe"]
    v4 = next(r for r in rows if R.stages_of(r) == 4)
    assert summ.mape["interleaved1f1b (v 4)"] == pytest.approx(abs(R.error_pct(v4)))
    assert summ.worst_cell.startswith("interleaved1f1b (v 4), default, mbs 1")
    assert list(R.summarize([r for r in rows if R.stages_of(r) != 4]).mape) == ["interleaved1f1b", "gpipe"]
    assert {g: len(c) for g, c in plots.bar_groups(rows).items()} == {
        "interleaved1f1b (v 3)": 1, "interleaved1f1b (v 4)": 1, "gpipe": 1}
    assert plots.bars(rows, tmp_path / "bars.png").stat().st_size > 0


def test_a_comparison_md_is_not_read_as_measurements(tmp_path, prof_path):
    """comparison.md is a report: the measured readers refuse it in one line (the seed's layout
    is what they read) rather than taking its simulated or v-labelled cells for measurements.
    What it was made from reads back to the cells, and the v, it shows."""
    path = tmp_path / "m.csv"
    path.write_text("schedule,network,micro_batch_size,batch_size,step_time_s,stages_per_rank\n"
                    "interleaved1f1b,default,1,4,1.0,3\ngpipe,default,1,4,1.5,\n")
    out = tmp_path / "out"
    lines, _, _ = C.compare([path], prof_path, out=out)
    md = out / "comparison.md"
    assert "| interleaved1f1b (v 3) | default | 1 | " in md.read_text()
    with pytest.raises(ValueError) as e:
        M.read([md], batch_size=BATCH)
    assert str(e.value).startswith(f"{md}: no table in the seed's layout (") and "\n" not in str(e.value)
    again = C.build_rows(P.load(prof_path), M.read([path]))
    assert R.comparison_table(again) in "\n".join(lines)


def test_figures_and_outputs(tmp_path, prof_path):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    out, figs = tmp_path / "out", tmp_path / "figs"
    out.mkdir()
    lines, summ, written = C.compare([path], prof_path, figures=figs, out=out)
    assert sorted(p.name for p in written) == ["bars.png", "comparison.json", "comparison.md", "heatmap.png",
                                               "parity.png"]
    for name in ("parity.png", "bars.png", "heatmap.png"):
        assert (figs / name).stat().st_size > 10_000, name
    assert (out / "comparison.md").read_text() == "\n".join(lines) + "\n"
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["mape"] == summ.mape and doc["worst_cell"] == summ.worst_cell and len(doc["cells"]) == 4
    for key in ("schedule", "network", "micro_batch_size", "simulated_s", "measured_s", "measured_lo_s",
                "measured_hi_s", "runs_s", "step_spread_pct", "noise_pct"):
        assert key in doc["cells"][0], key


# ----------------------------------------------------------------------------- the verb


def test_cli_compare_prints_the_table_and_the_mape_line_last(tmp_path, prof_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text(GOOD_CSV)
    rc = main(["compare", "--profile", str(prof_path), "--measured", str(path), "--out", str(tmp_path),
               "--figures", str(tmp_path / "f")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    out = cap.out.strip().splitlines()
    assert out[-1] == "MAPE: gpipe 15.0%, 1f1b 30.0%, worst 50.0% (1f1b, default, mbs 1)"
    assert "Compared 4 cells (gpipe 2, 1f1b 2)." in out
    assert out == (tmp_path / "comparison.md").read_text().strip().splitlines()
    assert f"wrote {tmp_path / 'f' / 'parity.png'}" in cap.err


def test_cli_compare_the_seed_table(tmp_path, capsys):
    path = tmp_path / "seed.md"
    path.write_text(SEED)
    assert main(["compare", "--measured", str(path), "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "skipped 58 unfilled cells, 1 unreadable ('11.s' at 1F1B, delay 10ms  bandwidth 1Gbps, mbs 4)" in out
    assert re.fullmatch(r"MAPE: gpipe \d+\.\d%, worst \d+\.\d% \(gpipe, delay 10ms  bandwidth 1Gbps, mbs 4\)",
                        out.strip().splitlines()[-1])


@pytest.mark.parametrize("name, text, extra, msg", [
    ("gone.csv", None, [], "gone.csv: no such file"),
    ("m.csv", "schedule,network,micro_batch_size,batch_size\n", [], "lacks column step_time_s"),
    ("m.csv", CSV_HEAD + "gpipe,default,1,4,x,,\n", [], "row 1 (line 2), column step_time_s: 'x'"),
    ("m.md", SEED, [], "pass --batch-size"),
    ("m.xlsx", "x", [], "cannot tell the format from the suffix '.xlsx'"),
    ("m.csv", CSV_HEAD + "gpipe,default,8,64,5,,\n", [],
     "no measured cell can be compared with this profile (1 cell read; gpipe, default, mbs 8, batch 64: "
     "the profile has no compute times for micro-batch size 8 (it has 1, 2))"),
    ("m.csv", GOOD_CSV, ["--batch-size", "8"], "no measured cell can be compared"),
    ("m.csv", GOOD_CSV, ["--batch-size", "0"], "--batch-size must be a positive integer"),
    ("m.csv", GOOD_CSV, ["--out", "/nonexistent/out"], "--out: folder /nonexistent/out does not exist"),
])
def test_cli_bad_inputs_give_one_line_and_exit_2(tmp_path, prof_path, capsys, name, text, extra, msg):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    rc = main(["compare", "--profile", str(prof_path), "--measured", str(path), *extra])
    err = _err(capsys)
    assert rc == 2 and err.startswith("pipesim compare: error: ") and msg in err, err


# ----------------------------------------------------------------------------- validate and plot share it


def test_validate_and_plot_go_through_the_comparison(tmp_path, prof_path, monkeypatch, capsys):
    """validate's step 4 with a reused profile and stand-in measurements (no torch): its
    comparison.json rows are compare's rows for its measured.jsonl, and plot redraws them."""
    out = tmp_path / "v"
    out.mkdir()
    (out / "profile.json").write_text(prof_path.read_text())
    times = iter([1.25, 2.0, 1.0, 2.0, 1.35, 2.2, 1.1, 1.8])

    def fake(*a, **k):
        t = next(times)
        return {"median": t, "p10": t * 0.95, "p90": t * 1.05, "n": 3, "wall_s": 0.0, "results": "", "trace": None,
                "replay_s": t * 0.99, "speed_ms": 1.0, "usage": {"other_cpu_pct": 0.0, "steal_pct": 0.0}}

    monkeypatch.setattr(V, "measure_cell", fake)
    summ = V.validate(out, networks="default", micro_batch_sizes=(1, 2), batch_size=BATCH, figures=None,
                      repeats=2, tiebreak_pct=None)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == summ.last_line() == (out / "comparison.md").read_text().strip().splitlines()[-1]
    assert printed[-2].startswith("Replay MAPE") and "worst 1.0%" in printed[-2]
    assert printed[-3].startswith("Machine speed during the runs")
    doc = json.loads((out / "comparison.json").read_text())
    rows = C.build_rows(P.load(out / "profile.json"), M.read([out / "measured.jsonl"]))
    assert [(r["schedule"], r["micro_batch_size"]) for r in rows] == \
        [(r["schedule"], r["micro_batch_size"]) for r in doc["cells"]]
    for mine, theirs in zip(rows, doc["cells"]):
        assert mine["simulated_s"] == pytest.approx(theirs["simulated_s"], rel=1e-12)
        for key in ("measured_s", "measured_lo_s", "measured_hi_s", "runs_s", "noise_pct", "step_spread_pct"):
            assert mine[key] == pytest.approx(theirs[key]), key
    lines, again, _ = C.compare([out / "measured.jsonl"], out / "profile.json")
    assert again.last_line() == summ.last_line()
    assert main(["plot", "--out", str(out), "--figures", str(tmp_path / "figs")]) == 0
    drawn = capsys.readouterr().out.split()
    assert sorted(p.rsplit("/", 1)[-1] for p in drawn) == ["bars.png", "heatmap.png", "parity.png"]   # no trace


def test_plot_without_a_validation_says_what_to_run(tmp_path, capsys):
    assert main(["plot", "--out", str(tmp_path / "nothing")]) == 2
    assert "run 'pipesim validate" in _err(capsys)


def test_a_noisy_machine_is_said_so():
    from loop.validate import too_noisy

    quiet = [{"drift_pct": d} for d in (0.0, 3.0, -2.0)]
    assert too_noisy(quiet) is None
    assert "moved 24 points" in too_noisy([{"drift_pct": -10.0}, {"drift_pct": 20.0}])
    one_hiccup = [{"drift_pct": 0.0}] * 19 + [{"drift_pct": 48.0}]
    assert too_noisy(one_hiccup) is None
    assert "2 of 4 runs disturbed" in too_noisy([{"noisy": "x"}, {"noisy": "y"}, {}, {}])


def test_validate_defaults_are_the_commands_defaults():
    """validate() once defaulted to batch 16 and 6 steps while its command and the README said 4 and 30."""
    import inspect

    from loop.cli import build_parser

    sig = inspect.signature(V.validate).parameters
    ns = build_parser().parse_args(["validate"])
    assert sig["batch_size"].default == ns.batch_size == 4
    assert sig["steps"].default == ns.steps == 30
    assert sig["repeats"].default == ns.repeats
    assert tuple(sig["micro_batch_sizes"].default) == (1, 2, 4) and ns.micro_batch_sizes == "1,2,4"
