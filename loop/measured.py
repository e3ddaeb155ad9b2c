"""Measured step times from the files pipesim and people write, in one shape.

Every reader returns a list of *measured cells*, dicts with the keys

* ``schedule`` (a name of :data:`pipesim.schedule.GENERATORS`), ``network`` (the setting's label as written),
  ``micro_batch_size``, ``batch_size``;
* ``measured_s``: the cell's step time, the median of its runs' values;
* ``measured_lo_s`` / ``measured_hi_s``: the runs' median p10 / p90 of steps (None when
  the file has no spread);
* ``runs_s``: each run's value, in the order read;
* ``step_spread_pct``: half the p10-p90 range over the median, median over runs (None
  without a spread);
* ``source``: where it was read (file, or files joined by ``; ``);
* ``ranks``: the number of ranks it ran on, where the file says (else None);
* ``stages_per_rank``: the virtual stages per rank of an interleaved schedule, where the
  file says (measured.jsonl, result files, a CSV's ``stages_per_rank`` column, a markdown
  table's ``Stages per rank`` column); absent otherwise (the simulation then takes the
  command line's default, :data:`pipesim.schedule.DEFAULT_STAGES_PER_RANK`).

Several runs of one cell (the same schedule, network, micro-batch size and batch size),
in one file or several, become one cell whose time is the median of the runs, as
``pipesim validate`` does. The formats:

* :func:`read_measured_jsonl`: a validation's or sweep's ``measured.jsonl`` (one line per run);
* :func:`read_results`: ``pipesim run --out`` result files, or a folder of them;
* :func:`read_csv`: a CSV with the columns in :data:`CSV_COLUMNS` (+ :data:`CSV_OPTIONAL`);
* :func:`read_markdown`: tables in the seed's layout (``### Gpipe ...`` / ``### 1F1B ...``
  headings, also ``### Interleaved 1F1B ...`` / ``### ZB-H1 ...``, a row per network
  setting, a ``Micro batch size: N`` column per size).

:func:`read` picks the reader by suffix. Bad input raises ``ValueError`` (or
``FileNotFoundError``) with one line that names the file and the place; cells a file
leaves out (unfilled, unreadable, cut lines) are said in ``notes``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from pathlib import Path

from pipesim.schedule import GENERATORS, VIRTUAL

CSV_COLUMNS = ["schedule", "network", "micro_batch_size", "batch_size", "step_time_s"]
CSV_OPTIONAL = ["step_time_p10_s", "step_time_p90_s", "stages_per_rank"]
MD_STAGES_COLUMN = "Stages per rank"   # the markdown tables' column of stages per rank (any case, _ or -)
SUFFIXES = {".jsonl": "measured.jsonl", ".json": "pipesim run result", ".csv": "CSV", ".md": "markdown table"}
MAX_LISTED = 5  # unreadable cells named one by one in a note, at most


# ----------------------------------------------------------------------------- common


def norm_label(label: str) -> str:
    """A setting's label with runs of spaces collapsed: the key two files agree on."""
    return " ".join(str(label).split())


def schedule_name(text: str, where: str) -> str:
    s = str(text).strip().lower()
    if s not in GENERATORS:
        raise ValueError(f"{where}: unknown schedule {text!r}; expected one of {', '.join(GENERATORS)}")
    return s


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not a positive integer")
    try:
        f = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a positive integer") from None
    if not math.isfinite(f) or f < 1 or f != int(f):
        raise ValueError(f"{where}: {value!r} is not a positive integer")
    return int(f)


def _stages_per_rank(value, schedule: str, where: str, absent: str = "leave it empty") -> int | None:
    """An optional stages per rank (a CSV or markdown cell, a JSON field): None when empty or
    null; refused in one line when not a positive integer, or other than 1 for a schedule that
    runs one stage per rank (1 is what those run: accepted). ``absent``: how the file leaves
    it out, said in the refusal."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value in ("", "-", "\u2014"):
        return None
    v = _positive_int(value, where)
    if v != 1 and schedule not in VIRTUAL:
        raise ValueError(f"{where}: {v} stages per rank given for {schedule}, which runs one stage per rank; "
                         f"{absent} or write 1 (several stages per rank: {', '.join(VIRTUAL)})")
    return v


def _seconds(value, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{where}: {value!r} is not a time in seconds")
    try:
        f = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a time in seconds") from None
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"{where}: {value!r} is not a positive, finite time in seconds")
    return f


# per-run figures that a cell takes the median of, when every run has one: the replay of the run
# with its own compute (pipesim.replay), the machine's drift against calibration (runtime.speed),
# the model's compute probed before the run against after calibration (calibrate.drift), the run's
# CPU per step against the profile's and the cell at that speed (pipesim.context.cpu_replay), and
# the cell from the profile at the machine's level re-probed before the run (loop.level)
RUN_EXTRAS = ("replay_s", "drift_pct", "compute_drift", "cpu_drift", "speed_replay_s", "recal_s")


def run_record(schedule: str, network: str, mbs: int, batch: int, median: float, p10: float | None = None,
               p90: float | None = None, source: str = "", ranks: int | None = None,
               stages_per_rank: int | None = None, **extras) -> dict:
    """One run of one cell (:func:`group_runs` turns runs into cells); ``extras``: see RUN_EXTRAS.
    ``stages_per_rank`` is kept for interleaved schedules only (the others run one)."""
    return {"schedule": schedule, "network": network, "micro_batch_size": mbs, "batch_size": batch,
            "median": median, "p10": p10, "p90": p90, "source": source, "ranks": ranks,
            **({"stages_per_rank": stages_per_rank} if stages_per_rank is not None and schedule in VIRTUAL else {}),
            **{k: v for k, v in extras.items() if k in RUN_EXTRAS and v is not None}}


def cell_key(rec: dict) -> tuple:
    return (rec["schedule"], norm_label(rec["network"]), rec["micro_batch_size"], rec["batch_size"],
            rec.get("stages_per_rank"))


def cell_from_runs(runs: list[dict]) -> dict:
    """A cell from its runs: the median of the runs' medians (and of their p10s and p90s)."""
    medians = [r["median"] for r in runs]
    spread = [r for r in runs if r["p10"] is not None and r["p90"] is not None]
    both = len(spread) == len(runs)
    first = runs[0]
    ranks = {r["ranks"] for r in runs if r.get("ranks") is not None}
    return {"schedule": first["schedule"], "network": first["network"],
            "micro_batch_size": first["micro_batch_size"], "batch_size": first["batch_size"],
            "measured_s": statistics.median(medians),
            "measured_lo_s": statistics.median(r["p10"] for r in runs) if both else None,
            "measured_hi_s": statistics.median(r["p90"] for r in runs) if both else None,
            "runs_s": medians,
            "step_spread_pct": statistics.median(100 * (r["p90"] - r["p10"]) / 2 / r["median"] for r in runs)
            if both else None,
            "source": "; ".join(dict.fromkeys(r["source"] for r in runs)),
            "ranks": ranks.pop() if len(ranks) == 1 else None,
            **({"stages_per_rank": first["stages_per_rank"]} if "stages_per_rank" in first else {}),
            **{k: statistics.median(r[k] for r in runs) for k in RUN_EXTRAS if all(k in r for r in runs)}}


def run_spread_pct(medians: list[float]) -> float:
    """How far apart a cell's runs are: (max - min) / min, in percent."""
    return 100.0 * (max(medians) - min(medians)) / min(medians)


def group_runs(runs: list[dict]) -> list[dict]:
    """Runs -> cells, in the order each cell first appears."""
    by: dict[tuple, list[dict]] = {}
    for r in runs:
        by.setdefault(cell_key(r), []).append(r)
    return [cell_from_runs(rs) for rs in by.values()]


def _need(rec: dict, key: str, where: str):
    if key not in rec or rec[key] is None:
        raise ValueError(f"{where}: no {key!r}")
    return rec[key]


# ----------------------------------------------------------------------------- measured.jsonl


def read_measured_jsonl(path: str | Path, notes: list[str] | None = None) -> list[dict]:
    """The cells of a ``measured.jsonl`` (see :func:`measured_jsonl_runs`)."""
    return group_runs(measured_jsonl_runs(path, notes))


def measured_jsonl_runs(path: str | Path, notes: list[str] | None = None) -> list[dict]:
    """A validation's or sweep's ``measured.jsonl``: one line per finished run (``key``,
    ``run``, ``schedule``, ``network``, ``micro_batch_size``, ``batch_size``, ``median``,
    ``p10``, ``p90``, ...; ``stages_per_rank`` for an interleaved schedule, refused above 1 for
    the others). A later line for the same cell and run replaces an earlier one;
    a line cut by a crash is skipped (and said in ``notes``)."""
    path = Path(path)
    text = _read_text(path)
    runs: dict[tuple, dict] = {}
    cut = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            cut.append(i)
            continue
        where = f"{path}, line {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: not a JSON object")
        if rec.get("disturbed"):
            continue  # kept in the log, measured again under the same run index
        sched = schedule_name(_need(rec, "schedule", where), where)
        net = _need(rec, "network", where)
        mbs = _positive_int(_need(rec, "micro_batch_size", where), f"{where}, micro_batch_size")
        batch = _positive_int(_need(rec, "batch_size", where), f"{where}, batch_size")
        med = _seconds(_need(rec, "median", where), f"{where}, median")
        p10 = _seconds(rec["p10"], f"{where}, p10") if rec.get("p10") is not None else None
        p90 = _seconds(rec["p90"], f"{where}, p90") if rec.get("p90") is not None else None
        v = _stages_per_rank(rec.get("stages_per_rank"), sched, f"{where}, stages_per_rank", "leave it out")
        r = run_record(sched, str(net), mbs, batch, med, p10, p90, str(path), stages_per_rank=v,
                       **{k: rec[k] for k in RUN_EXTRAS if isinstance(rec.get(k), (int, float))})
        key = (*cell_key(r), rec.get("run", 0))
        runs[key] = r
    if cut and notes is not None:
        notes.append(f"{path}: skipped {len(cut)} unreadable line{'s' if len(cut) > 1 else ''} "
                     f"({', '.join(map(str, cut[:MAX_LISTED]))}{', ...' if len(cut) > MAX_LISTED else ''}; "
                     "cut by a crash?)")
    if not runs:
        raise ValueError(f"{path}: no measured runs in it")
    return list(runs.values())


# ----------------------------------------------------------------------------- pipesim run results


def result_files(path: str | Path) -> list[Path]:
    """A result file itself, or every ``*results*.json`` under a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*results*.json") if p.is_file())
        if not found:
            raise ValueError(f"{path}: a folder with no *results*.json file in it (pipesim run --out writes them)")
        return found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def result_run(path: Path) -> dict:
    """One ``pipesim run`` result file -> one run record (network None: default). Its
    ``stages_per_rank`` counts for an interleaved schedule; the others' must be 1 (what
    ``pipesim run`` writes for them) or absent."""
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    where = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("step_time"), dict):
        raise ValueError(f"{path}: not a 'pipesim run' result file (no 'step_time' object); "
                         "give the file 'pipesim run --out' wrote")
    sched = schedule_name(_need(doc, "schedule", where), f"{where}, schedule")
    mbs = _positive_int(_need(doc, "micro_batch_size", where), f"{where}, micro_batch_size")
    batch = _positive_int(_need(doc, "batch_size", where), f"{where}, batch_size")
    st = doc["step_time"]
    med = _seconds(_need(st, "median", f"{where}, step_time"), f"{where}, step_time.median")
    p10 = _seconds(st["p10"], f"{where}, step_time.p10") if st.get("p10") is not None else None
    p90 = _seconds(st["p90"], f"{where}, step_time.p90") if st.get("p90") is not None else None
    ranks = _positive_int(doc["ranks"], f"{where}, ranks") if doc.get("ranks") is not None else None
    v = _stages_per_rank(doc.get("stages_per_rank"), sched, f"{where}, stages_per_rank", "leave it out")
    return run_record(sched, doc.get("network") or "default", mbs, batch, med, p10, p90, str(path), ranks,
                      stages_per_rank=v)


def read_results(paths: str | Path | list, notes: list[str] | None = None) -> list[dict]:
    """``pipesim run --out`` result files (a folder: all ``*results*.json`` in it, recursively);
    several files of one cell are runs of it."""
    return group_runs(results_runs(paths, notes))


def results_runs(paths: str | Path | list, notes: list[str] | None = None) -> list[dict]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [result_run(f) for p in paths for f in result_files(p)]


# ----------------------------------------------------------------------------- CSV


def read_csv(path: str | Path, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """The cells of a CSV (see :func:`csv_runs`)."""
    return group_runs(csv_runs(path, batch_size, notes))


def csv_runs(path: str | Path, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """A CSV with a header row: ``schedule, network, micro_batch_size, batch_size,
    step_time_s`` (seconds), optionally ``step_time_p10_s, step_time_p90_s`` and
    ``stages_per_rank`` (interleaved schedules; empty: the default, 2). Without a
    ``batch_size`` column, ``batch_size`` (``--batch-size``) gives it. Rows of the same cell
    are runs of it."""
    path = Path(path)
    text = _read_text(path).lstrip("\ufeff")   # a spreadsheet's byte-order mark
    reader = csv.DictReader(text.splitlines())
    have = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = have
    need = [c for c in CSV_COLUMNS if not (c == "batch_size" and batch_size is not None)]
    missing = [c for c in need if c not in have]
    if missing:
        extra = " (or pass --batch-size)" if missing == ["batch_size"] else ""
        raise ValueError(f"{path}: the header lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}{extra}; "
                         f"it has {', '.join(have) or 'nothing'}; needed: {', '.join(CSV_COLUMNS)}")
    runs = []
    for i, row in enumerate(reader, 1):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue

        def at(col: str, i: int = i, line: int = reader.line_num) -> str:
            return f"{path}, row {i} (line {line}), column {col}"

        sched = schedule_name(row.get("schedule") or "", at("schedule"))
        net = (row.get("network") or "").strip()
        if not net:
            raise ValueError(f"{at('network')}: empty; write e.g. 'default' or 'delay 5ms'")
        mbs = _positive_int(row.get("micro_batch_size"), at("micro_batch_size"))
        raw_batch = (row.get("batch_size") or "").strip() if "batch_size" in have else ""
        if raw_batch:
            batch = _positive_int(raw_batch, at("batch_size"))
        elif batch_size is not None:
            batch = batch_size
        else:
            raise ValueError(f"{at('batch_size')}: empty (or pass --batch-size)")
        med = _seconds(row.get("step_time_s"), at("step_time_s"))
        lo = hi = None
        if (row.get("step_time_p10_s") or "").strip():
            lo = _seconds(row["step_time_p10_s"], at("step_time_p10_s"))
        if (row.get("step_time_p90_s") or "").strip():
            hi = _seconds(row["step_time_p90_s"], at("step_time_p90_s"))
        v = _stages_per_rank(row.get("stages_per_rank"), sched, at("stages_per_rank"))
        runs.append(run_record(sched, net, mbs, batch, med, lo, hi, str(path), stages_per_rank=v))
    if not runs:
        raise ValueError(f"{path}: no rows under the header")
    return runs


# ----------------------------------------------------------------------------- markdown (the seed's layout)

_MBS_COL = re.compile(r"micro[\s-]*batch[\s-]*size\s*:?\s*(\d+)", re.I)
_STAGES_COL = re.compile(r"stages[\s_-]*per[\s_-]*rank", re.I)
_VALUE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(s|sec|ms)?", re.I)  # a bare number: seconds
_UNFILLED = {"", "s", "-", "?", "—"}
# the headings pipesim grid writes (pipesim.cmd_sim.SCHEDULE_TITLES), interleaved before plain 1F1B
_HEADINGS = [(re.compile(r"\binterleaved[\s_-]*1f1b\b", re.I), "interleaved1f1b"),
             (re.compile(r"\bzb[\s_-]*h1\b", re.I), "zbh1"),
             (re.compile(r"\bgpipe\b", re.I), "gpipe"), (re.compile(r"\b1f1b\b", re.I), "1f1b")]
_HEADINGS_SAID = "'### Gpipe ...', '### 1F1B ...', '### Interleaved 1F1B ...' or '### ZB-H1 ...'"


def _cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|"):
        s = s[:-1]
    return [c.strip() for c in s.split("|")]


def read_markdown(path: str | Path, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """The cells of a markdown file (see :func:`markdown_runs`)."""
    return group_runs(markdown_runs(path, batch_size, notes))


def markdown_runs(path: str | Path, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """Tables in the seed's layout: under a ``### Gpipe ...`` or ``### 1F1B ...`` heading (or
    ``### Interleaved 1F1B ...``, ``### ZB-H1 ...``, as ``pipesim grid`` writes them), a
    header ``| Network setting | Micro batch size: 1 | ... |``, then a row per setting
    with cells like ``8.97 s`` (``ms`` also read). An optional ``Stages per rank`` column
    gives an interleaved row's stages per rank (empty: the default, 2); other schedules
    take only 1 there. The tables do not say the batch size:
    ``batch_size`` (``--batch-size``) must. Unfilled cells (``s``, empty) and unreadable
    ones (``11.x s``) are skipped and counted in ``notes``."""
    path = Path(path)
    if batch_size is None:
        raise ValueError(f"{path}: a markdown table does not record the batch size; pass --batch-size "
                         "(the seed's GPT-3 small tables: --batch-size 64)")
    text = _read_text(path)
    runs = []
    unfilled = 0
    unreadable: list[str] = []
    heading: tuple[str, str] | None = None   # (schedule, as the heading writes it)
    cols: list[int | None] | None = None      # micro-batch size per column of the current table
    vcol: int | None = None                   # the current table's stages-per-rank column
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("#"):
            heading, cols = None, None
            for rx, name in _HEADINGS:
                m = rx.search(s)
                if m:
                    heading = (name, m.group(0))
                    break
            continue
        if not s.startswith("|"):
            cols = None
            continue
        cells = _cells(s)
        if cols is None:
            found = [_MBS_COL.search(c) for c in cells[1:]]
            if any(found):
                if heading is None:
                    raise ValueError(f"{path}, line {i}: a table of micro-batch sizes outside a schedule heading "
                                     f"({_HEADINGS_SAID}); the heading names the schedule")
                cols = [int(m.group(1)) if m else None for m in found]
                vcols = [j for j, c in enumerate(cells[1:], 1) if _STAGES_COL.fullmatch(c)]
                vcol = vcols[0] if vcols else None
            continue
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue   # the |---| line
        assert heading is not None
        label = cells[0]
        if not label:
            continue
        spr = None
        if vcol is not None:
            spr = _stages_per_rank(cells[vcol] if vcol < len(cells) else "", heading[0],
                                 f"{path}, line {i}, column {MD_STAGES_COLUMN!r}")
        for c, mbs in zip(cells[1:], cols):
            if mbs is None:
                continue
            if c.lower() in _UNFILLED:
                unfilled += 1
                continue
            v = _VALUE.fullmatch(c)
            if v is None:
                unreadable.append(f"{c!r} at {heading[1]}, {label}, mbs {mbs}")
                continue
            sec = float(v.group(1)) * (1e-3 if (v.group(2) or "").lower() == "ms" else 1.0)
            if not sec > 0:
                unreadable.append(f"{c!r} at {heading[1]}, {label}, mbs {mbs}")
                continue
            runs.append(run_record(heading[0], label, mbs, batch_size, sec, source=f"{path}:{i}", stages_per_rank=spr))
    if notes is not None and (unfilled or unreadable):
        parts = []
        if unfilled:
            parts.append(f"{unfilled} unfilled cell{'s' if unfilled > 1 else ''}")
        if unreadable:
            listed = ", ".join(unreadable[:MAX_LISTED]) + (", ..." if len(unreadable) > MAX_LISTED else "")
            parts.append(f"{len(unreadable)} unreadable ({listed})")
        notes.append(f"{path}: skipped " + ", ".join(parts))
    if not runs:
        raise ValueError(f"{path}: no filled cell in its tables ({unfilled} unfilled, {len(unreadable)} unreadable)"
                         if unfilled or unreadable else
                         f"{path}: no table in the seed's layout ({_HEADINGS_SAID} headings, "
                         "'| Network setting | Micro batch size: 1 | ...' header)")
    return runs


# ----------------------------------------------------------------------------- dispatch


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: a folder; name a file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None


def runs_of(path: str | Path, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """The runs in one measured file (or a folder of run results), the reader picked by suffix."""
    path = Path(path)
    if path.is_dir():
        return results_runs(path, notes)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        kinds = ", ".join(f"{k} ({v})" for k, v in SUFFIXES.items())
        raise ValueError(f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
                         f"use one of {kinds}, or a folder of run results")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix == ".jsonl":
        return measured_jsonl_runs(path, notes)
    if suffix == ".json":
        return results_runs(path, notes)
    if suffix == ".csv":
        return csv_runs(path, batch_size, notes)
    return markdown_runs(path, batch_size, notes)


def read(paths, batch_size: int | None = None, notes: list[str] | None = None) -> list[dict]:
    """Read every path (format by suffix); runs of the same cell, in one file or several,
    become one cell."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return group_runs([r for p in paths for r in runs_of(p, batch_size, notes)])
