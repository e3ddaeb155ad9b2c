"""Offline (thirteenth session): each folder predicted with its own profile, its neighbour's, and their average. Run from the repository root."""
import statistics as st, sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, 'benchmarks')  # run from the repository root
import overhead_estimators as OE
from pipesim import engine as E
from pipesim import profile as P
def avg(a, b):
    stages = []
    for sa, sb in zip(a.stages, b.stages):
        comp = {}
        for m, ca in sa.compute.items():
            cb = sb.compute.get(m)
            if cb is None: comp[m] = ca; continue
            by = {k: (v + (cb.overhead_by_schedule_s or {}).get(k, v)) / 2 for k, v in (ca.overhead_by_schedule_s or {}).items()}
            comp[m] = replace(ca, forward_s=(ca.forward_s + cb.forward_s) / 2, backward_s=(ca.backward_s + cb.backward_s) / 2,
                              overhead_s=(ca.overhead_s + cb.overhead_s) / 2, overhead_by_schedule_s=by)
        stages.append(replace(sa, compute=comp, optimizer_s=(sa.optimizer_s + sb.optimizer_s) / 2))
    return replace(a, stages=tuple(stages))
R = 'benchmarks/results/'
pairs = [('validation-2026-11-29-s12/validate-21', 'validation-2026-11-29-s12/validate-22'),
         ('validation-2026-11-29-s12/demo-4', 'validation-2026-11-29-s12/demo-5'),
         ('validation-2026-11-29-s12/demo-5', 'validation-2026-11-29-s12/demo-6'),
         ('validation-2026-11-29-s11/validate-18', 'validation-2026-11-29-s11/validate-19'),
         ('validation-2026-11-29-s11/validate-19', 'validation-2026-11-29-s11/validate-20'),
         ('validation-2026-11-29-s11/demo-1', 'validation-2026-11-29-s11/demo-2'),
         ('validation-2026-11-29-s11/demo-2', 'validation-2026-11-29-s11/demo-3')]
tot = {'own': [], 'other': [], 'avg': []}
for x, y in pairs:
    for t, o in ((x, y), (y, x)):
        pt, po = P.load(R + t + '/profile.json'), P.load(R + o + '/profile.json')
        cells = OE.cells_of(Path(R + t)); tr = E.Transport.for_profile(pt)
        row = []
        for name, prof in (('own', pt), ('other', replace(po, host=pt.host)), ('avg', avg(pt, po))):
            e = [abs(v) for *_, v in OE.errors(prof, cells, tr)]
            tot[name] += e; row.append(f"{name} {st.fmean(e):.2f} ({max(e):.1f})")
        print(f"{t.split('/')[-1]:12} with {o.split('/')[-1]:12}", ' | '.join(row))
for k, v in tot.items(): print(k, f"{st.fmean(v):.2f} worst {max(v):.1f} n={len(v)}")
