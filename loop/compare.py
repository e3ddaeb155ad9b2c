"""``pipesim compare``: measured step times beside the profile's predictions.

The one comparison path of the loop. ``pipesim validate`` (step 4), ``pipesim plot``
and ``pipesim compare`` all go through it:

1. :func:`build_rows`: simulate every measured cell from the profile alone (the
   profile's default transport, :data:`SIM_STEPS` steps, the last reported) and join it
   with the measurement -> one row per cell, the dicts of ``comparison.json``'s
   ``cells``: ``schedule``, ``network``, ``micro_batch_size``, ``simulated_s``,
   ``measured_s``, ``measured_lo_s``, ``measured_hi_s``, ``runs_s``,
   ``step_spread_pct``, ``noise_pct``, ``batch_size``, ``source``. A cell the profile
   cannot simulate (a micro-batch size it lacks, a network it cannot read, a link it
   does not have) is skipped with the reason. Later columns are more keys in a row.
2. :func:`render`: the markdown (title, table, notes, the ``MAPE: ...`` line last);
   :func:`comparison_doc`: the JSON; :func:`write_outputs`: both to a folder.
3. :func:`draw`: the parity, bars and heatmap figures.

:func:`compare` is the verb: read measured files (:mod:`loop.measured`), the above,
print. Nothing here imports torch.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from loop import measured as M
from loop import noise as NF
from loop import report as R
from loop.report import stages_of
from pipesim import engine as E
from pipesim import network as N
from pipesim import profile as P
from pipesim.util import output_path, write_json_atomic, write_text_atomic

SIM_STEPS = 3  # consecutive steps simulated; the last one is reported (steady state, as measured)
MAX_REASONS = 3  # skip reasons repeated in the error when nothing is left to compare

_SEED = {M.norm_label(lbl): lbl for lbl in N.SEED_LABELS}


def setting_of(label: str) -> N.NetworkSetting:
    """A measured cell's network: a seed label (spaces as in the seed or collapsed) by
    :func:`pipesim.network.seed_setting`, anything else by :func:`pipesim.network.parse`.
    The setting keeps the label as written."""
    if M.norm_label(label) in _SEED:
        return N.seed_setting(_SEED[M.norm_label(label)])
    return N.parse(label)


def cell_name(cell: dict) -> str:
    return f"{R.cell_name(cell)}, batch {cell['batch_size']}"


def why_not(prof: P.Profile, cell: dict, net: N.NetworkSetting) -> str | None:
    """Why the profile cannot simulate a measured cell (None: it can)."""
    p = prof.num_stages
    m, have = cell["micro_batch_size"], prof.micro_batch_sizes
    if m not in have:
        return f"the profile has no compute times for micro-batch size {m} (it has {', '.join(map(str, have))})"
    if cell["batch_size"] % m:
        return f"batch size {cell['batch_size']} is not a multiple of micro-batch size {m}"
    if cell.get("ranks") is not None and cell["ranks"] != p:
        return f"measured on {cell['ranks']} ranks; the profile has {p} stages"
    for links, _ in net.clauses:
        for a, b in links or ():
            if max(a, b) >= p or abs(a - b) != 1:
                joined = ", ".join(f"{s}-{s + 1}" for s in range(p - 1))
                return f"the network names link {a}-{b}; the profile's {p} stages are joined by {joined} only"
    return None


def build_rows(prof: P.Profile, cells: Sequence[dict], transport: E.Transport | None = None, *,
               steps: int = SIM_STEPS, simulated: dict | None = None, skipped: list[str] | None = None) -> list[dict]:
    """Simulate every measured cell (see :mod:`loop.measured` for their shape) from the
    profile alone and join: one row per cell the profile can simulate, in the cells'
    order. ``simulated`` maps ``(schedule, network label, mbs)`` to step times already
    simulated with the same profile, transport and steps (validate's step 2); the others
    are simulated here. Cells it cannot simulate are left out, their reasons appended
    to ``skipped``."""
    transport = transport or E.Transport.for_profile(prof)
    rows = []
    for c in cells:
        try:
            net = setting_of(c["network"])
            why = why_not(prof, c, net)
        except ValueError as e:
            why = str(e)
        sim = None
        if why is None:
            key = (c["schedule"], c["network"], c["micro_batch_size"])
            if simulated is not None and key in simulated:
                sim = simulated[key]
            else:
                try:
                    sim = E.simulate(prof, c["schedule"], c["micro_batch_size"], c["batch_size"], net,
                                     transport=transport, steps=steps, record=False,
                                     stages_per_rank=stages_of(c)).step_time
                except (ValueError, RuntimeError) as e:
                    why = f"cannot simulate: {e}"
        if sim is None:
            if skipped is not None:
                skipped.append(f"{cell_name(c)}: {why}")
            continue
        runs = list(c["runs_s"])
        rows.append({"schedule": c["schedule"], "network": c["network"], "micro_batch_size": c["micro_batch_size"],
                     "simulated_s": sim, "measured_s": c["measured_s"], "measured_lo_s": c.get("measured_lo_s"),
                     "measured_hi_s": c.get("measured_hi_s"), "runs_s": runs,
                     "step_spread_pct": c.get("step_spread_pct"),
                     "noise_pct": M.run_spread_pct(runs) if len(runs) > 1 else None,
                     "batch_size": c["batch_size"], "source": c.get("source", ""),
                     **({"stages_per_rank": c["stages_per_rank"]} if "stages_per_rank" in c else {}),
                     **{k: c[k] for k in M.RUN_EXTRAS if k in c}})
    return rows


# ----------------------------------------------------------------------------- text, JSON, figures


def step_spread(rows: Sequence[dict]) -> float | None:
    """Half the p10-p90 range of steps over the median, median over the cells that have one."""
    xs = [r["step_spread_pct"] for r in rows if r.get("step_spread_pct") is not None]
    return statistics.median(xs) if xs else None


def spread_lines(rows: Sequence[dict], summ: R.Summary, target: tuple[float, float] | None = None) -> list[str]:
    """The noise of the measurements: step to step, and run to run where cells have several runs;
    ``target`` (MAPE per schedule, worst cell; percent): the noise floor also says how often a
    perfect model would meet it (:func:`loop.noise.floor`)."""
    out = []
    st = step_spread(rows)
    if st is not None:
        out.append(f"Step-to-step spread (half the p10-p90 range, median over cells): {st:.1f}%.")
    noisy = [r for r in rows if r.get("noise_pct") is not None]
    if noisy and summ.noise_pct is not None:
        worst = max(noisy, key=lambda r: r["noise_pct"])
        out.append(f"Run-to-run spread of a cell ((max - min) / min of its runs): median {summ.noise_pct:.1f}%, "
                   f"worst {worst['noise_pct']:.1f}% ({R.cell_name(worst)}).")
    fl = _floor(rows, target)   # computed once per set of runs (the JSON asks for the same)
    if fl is not None:
        out.append(fl.line())
    return out


def _runs(rows: Sequence[dict]) -> list[list[float]]:
    """Each row's runs (step times), for the noise floor."""
    return [list(r.get("runs_s") or []) for r in rows]


def _floor(rows: Sequence[dict], target: tuple[float, float] | None) -> NF.Floor | None:
    """The rows' noise floor, grouped by schedule as the MAPE lines are."""
    return NF.floor_of(_runs(rows), groups=[str(r.get("schedule", "")) for r in rows], target=target)


def body_lines(rows: Sequence[dict], notes: Sequence[str], columns: Sequence = ()) -> list[str]:
    """The table and the notes under it (what validate prints). ``columns``: more table
    columns, ``(title, row -> text)`` (see :func:`loop.report.comparison_table`)."""
    return [R.comparison_table(list(rows), columns), "", *notes]


def render(title: str, intro: Sequence[str], rows: Sequence[dict], notes: Sequence[str], summ: R.Summary,
           columns: Sequence = ()) -> list[str]:
    """comparison.md's lines: title, intro, table, notes, and the MAPE line last."""
    return [title, "", *intro, "", *body_lines(rows, notes, columns), "", *summ.lines()]


def comparison_doc(rows: Sequence[dict], summ: R.Summary, target: tuple[float, float] | None = None,
                   **extra) -> dict:
    """comparison.json: the rows, the summary, then ``extra`` (``target``: as for :func:`spread_lines`)."""
    fl = _floor(rows, target)
    return {"cells": list(rows), "mape": summ.mape, "worst_pct": summ.worst_pct, "worst_cell": summ.worst_cell,
            "noise_pct": summ.noise_pct, "step_spread_pct": step_spread(rows),
            "noise_floor": None if fl is None else fl.to_json(),
            **({"recal_mape": summ.recal_mape, "recal_worst_pct": summ.recal_worst_pct} if summ.recal_mape else {}),
            **extra}


def write_outputs(out: str | Path, lines: Sequence[str], doc: dict) -> tuple[Path, Path]:
    out = Path(out)
    md, js = out / "comparison.md", out / "comparison.json"
    write_text_atomic(md, "\n".join(lines) + "\n")
    write_json_atomic(js, doc)
    return md, js


def draw(prof: P.Profile, rows: Sequence[dict], figures: str | Path, transport: E.Transport | None = None,
         title: str | None = None) -> list[Path]:
    """parity.png, bars.png and heatmap.png under ``figures``. The heatmap: the rows' most
    common batch size at their smallest micro-batch size (the most micro-batches, where
    the schedules differ most)."""
    from pipesim import plots

    figures = Path(figures)
    transport = transport or E.Transport.for_profile(prof)
    paths = [plots.parity(list(rows), figures / "parity.png",
                          title=title or f"Simulated vs measured ({_plural(len(rows), 'cell')})"),
             plots.bars(list(rows), figures / "bars.png")]
    batch = Counter(r["batch_size"] for r in rows).most_common(1)[0][0]
    mbs = min(r["micro_batch_size"] for r in rows if r["batch_size"] == batch)
    paths.append(plots.heatmap(prof, figures / "heatmap.png", micro_batch_size=mbs, batch_size=batch,
                               delays_ms=[0, 0.5, 1, 2, 5, 10, 20], bandwidths_gbps=[0.1, 0.2, 0.5, 1, 2, 5, 10],
                               transport=transport))
    return paths


# ----------------------------------------------------------------------------- the verb


def out_folder(path: str | Path, what: str) -> Path:
    """A folder the user named for output: made when its parent exists (or, deeper, under
    the current folder; see :func:`pipesim.util.output_path`), else refused."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what}: {p} is not a folder")
    if not p.exists() and p.parent.is_dir():
        p.mkdir()
    return output_path(p / "comparison.md", what).parent


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def compare(measured: Sequence[str | Path], profile: str | Path | None = None, *, batch_size: int | None = None,
            figures: str | Path | None = None, out: str | Path | None = None) -> tuple[list[str], R.Summary, list[Path]]:
    """Read the measured files, simulate their cells from ``profile`` (None: the bundled
    example), and return (comparison.md's lines, the summary, the files written).
    Raises ``ValueError`` when no cell can be compared."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}")
    if not measured:
        raise ValueError("no measured file given (--measured M [M ...])")
    out_dir = out_folder(out, "--out") if out else None
    fig_dir = out_folder(figures, "--figures") if figures else None
    prof = P.load(profile)
    transport = E.Transport.for_profile(prof)
    notes: list[str] = []
    cells = M.read(measured, batch_size, notes)
    skipped: list[str] = []
    if batch_size is not None:
        other = [c for c in cells if c["batch_size"] != batch_size]
        skipped += [f"{cell_name(c)}: measured at batch {c['batch_size']}, not --batch-size {batch_size}" for c in other]
        cells = [c for c in cells if c["batch_size"] == batch_size]
    rows = build_rows(prof, cells, transport, skipped=skipped)
    if not rows:
        reasons = "; ".join(skipped[:MAX_REASONS]) + (f"; and {len(skipped) - MAX_REASONS} more"
                                                      if len(skipped) > MAX_REASONS else "")
        raise ValueError(f"no measured cell can be compared with this profile ({_plural(len(cells), 'cell')} read"
                         + (f"; {reasons}" if reasons else "") + ")")
    summ = R.summarize(rows)
    where = str(profile) if profile else f"bundled example ({P.BUNDLED.name})"
    per = Counter(r["schedule"] for r in rows)
    title = f"# Comparison: {_plural(len(rows), 'measured cell')}, simulated from {Path(profile or P.BUNDLED).name}"
    intro = [f"Profile: {where} ({prof.source}, {prof.num_stages} stages). Predictions use only the profile "
             f"({transport.queue} queues, {transport.send_mode}; {SIM_STEPS} steps simulated, the last reported).",
             f"Measured: {', '.join(map(str, measured))}; a cell's time is the median of its runs."]
    notes_out = spread_lines(rows, summ)
    notes_out.append(f"Compared {_plural(len(rows), 'cell')} ({', '.join(f'{s} {n}' for s, n in per.items())})"
                     + (f"; skipped {len(skipped)} measured (below)." if skipped else "."))
    notes_out += notes
    notes_out += [f"Skipped {s}." for s in skipped]
    lines = render(title, intro, rows, notes_out, summ)
    written: list[Path] = []
    if out_dir is not None:
        doc = comparison_doc(rows, summ, profile=where, measured=[str(m) for m in measured],
                             batch_size=batch_size, sim_steps=SIM_STEPS, transport=transport.__dict__,
                             notes=notes, skipped=skipped)
        written += write_outputs(out_dir, lines, doc)
    if fig_dir is not None:
        written += draw(prof, rows, fig_dir, transport)
    return lines, summ, written
