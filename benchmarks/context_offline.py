"""Would compute measured in context fix the predictions? An offline test on a validation folder.

Fit: from the validation's default-network runs, each (schedule, micro-batch size, rank,
kind)'s median wall duration in the run, its own gap before it included (as
pipesim.replay takes it). Predict: every other cell with those durations (host model
off, since they already hold the sharing of cores), against the profile's prediction.
Only cells the fit did not see are scored. Usage:

    python benchmarks/context_offline.py benchmarks/results/validation-2026-11-26-session3/validate-e

(the folder needs the runs' traces, so use a validation's own --out folder).
"""
import collections
import json
import statistics
import sys

from loop.compare import setting_of
from pipesim import engine as E
from pipesim import profile as P
from pipesim import replay as RP
from pipesim.trace import read_csv

out = sys.argv[1] if len(sys.argv) > 1 else "out/validate"
prof = P.load(f"{out}/profile.json")
recs = [r for r in map(json.loads, open(f"{out}/measured.jsonl")) if not r.get("disturbed")]
# fit: default-network runs -> per (schedule, mbs, rank, kind) median of (duration + own gap)
fit = collections.defaultdict(list)
for r in recs:
    if not r["network"].startswith("default"):
        continue
    ev = read_csv(f"{out}/{r['trace']}")
    d = RP.durations_from_trace(ev)
    for (rank, step, act), v in d.items():
        if step < 2:
            continue
        kind = "OPT" if act == "OPT" else act[len(str(rank))]
        fit[(r["schedule"], r["micro_batch_size"], rank, kind)].append(v)
med = {k: statistics.median(v) for k, v in fit.items()}
cells = collections.defaultdict(list)
for r in recs:
    cells[(r["schedule"], r["network"], r["micro_batch_size"])].append(r["median"])
tr = E.Transport.for_profile(prof)
errs_old, errs_new = collections.defaultdict(list), collections.defaultdict(list)
worst_old = worst_new = 0
for (s, net, m), meds in cells.items():
    meas = statistics.median(meds)
    setting = setting_of(net)
    old = E.simulate(prof, s, m, 4, setting, transport=tr, steps=3, record=False).step_time
    dur = lambda rank, step, act, s=s, m=m: med[(s, m, rank, "OPT" if act == "OPT" else act[len(str(rank))])]
    new = E.simulate(prof, s, m, 4, setting, transport=tr, steps=3, record=False, durations=dur).step_time
    held_out = not net.startswith("default")
    if held_out:
        eo, en = 100*(old-meas)/meas, 100*(new-meas)/meas
        errs_old[s].append(abs(eo))
        errs_new[s].append(abs(en))
        worst_old = max(worst_old, abs(eo))
        worst_new = max(worst_new, abs(en))
        print(f"{s:5s} {net:36s} mbs {m}: measured {meas:.4f} old {eo:+6.1f}% new {en:+6.1f}%")
for s in errs_old:
    print(s, f"held-out MAPE old {statistics.mean(errs_old[s]):.1f}% new {statistics.mean(errs_new[s]):.1f}%")
print(f"worst old {worst_old:.1f}% new {worst_new:.1f}%")
