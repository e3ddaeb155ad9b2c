"""Offline (thirteenth session): each folder predicted with its own profile and with the compute, the in-context CPU per action, or both averaged over all calibrations of the same session (5-6 folders on machine B). Not realisable as it stands (it uses later calibrations); it sizes how much of the error is one calibration's noise. Run from the repository root."""
import statistics as st, sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, 'benchmarks')  # run from the repository root
import overhead_estimators as OE
from pipesim import engine as E
from pipesim import profile as P
def avgn(profs, base, what):
    stages = []
    for k, sa in enumerate(base.stages):
        comp = {}
        for m, ca in sa.compute.items():
            cs = [p.stages[k].compute[m] for p in profs if m in p.stages[k].compute]
            mean = lambda f: st.fmean(f(c) for c in cs)
            kw = {}
            if 'c' in what: kw.update(forward_s=mean(lambda c: c.forward_s), backward_s=mean(lambda c: c.backward_s))
            if 'o' in what:
                # in-context CPU per action: solo + overhead, averaged; overhead against base's solo
                sol = lambda c: (c.forward_s + c.backward_s) / 2
                for s in (ca.overhead_by_schedule_s or {}): pass
                kw['overhead_by_schedule_s'] = {s: max(0.0, mean(lambda c: sol(c) + (c.overhead_by_schedule_s or {}).get(s, c.overhead_s))
                                                       - (sol(kw and replace(ca, **{k2: v for k2, v in kw.items() if k2 in ('forward_s','backward_s')}) or ca)))
                                                for s in (ca.overhead_by_schedule_s or {})}
            comp[m] = replace(ca, **kw)
        stages.append(replace(sa, compute=comp, optimizer_s=st.fmean(p.stages[k].optimizer_s for p in profs) if 'c' in what else sa.optimizer_s))
    return replace(base, stages=tuple(stages))
R = 'benchmarks/results/'
groups = [['validation-2026-11-29-s12/' + x for x in ('validate-21', 'validate-22', 'demo-4', 'demo-5', 'demo-6')],
          ['validation-2026-11-29-s11/' + x for x in ('validate-18', 'validate-19', 'validate-20', 'demo-1', 'demo-2', 'demo-3')]]
tot = {}
for g in groups:
    profs = {f: P.load(R + f + '/profile.json') for f in g}
    for t in g:
        cells = OE.cells_of(Path(R + t)); tr = E.Transport.for_profile(profs[t])
        row = []
        for name, what in (('own', ''), ('compute', 'c'), ('in-context', 'o'), ('both', 'co')):
            prof = avgn(list(profs.values()), profs[t], what) if what else profs[t]
            e = [abs(v) for *_, v in OE.errors(prof, cells, tr)]
            tot.setdefault(name, []).extend(e); row.append(f"{name} {st.fmean(e):.2f} ({max(e):.1f})")
        print(f"{t.split('/')[-1]:12}", ' | '.join(row))
for k, v in tot.items(): print(k, f"{st.fmean(v):.2f} worst {max(v):.1f} n={len(v)}")
