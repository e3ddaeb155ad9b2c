"""Offline (thirteenth session): the runtime's CPU outside the computations (from the overhead probe) charged as work on the rank's core that the rank does not wait for, instead of added to each computation. Run from the repository root with FOLDERS."""
import json, statistics as st, sys
from pathlib import Path
sys.path.insert(0, 'benchmarks')  # run from the repository root
import overhead_estimators as OE
from loop import compare as C
from pipesim import engine as E
from pipesim import profile as P
BG = {}
MODE = {'on': False, 'frac': 1.0}
orig_dur = E._Sim._duration
def _duration(self, a, split):
    d = orig_dur(self, a, split)
    bg = 0.0
    if MODE['on']:
        bg = min(BG.get(a.stage, 0.0) * MODE['frac'], self.comp[a.stage].overhead(self.schedule))
    self._pending_bg = bg
    return d - bg
orig_comp = E._Sim._compute
def _compute(self, r, dur):
    ev = orig_comp(self, r, dur)
    bg = getattr(self, '_pending_bg', 0.0); self._pending_bg = 0.0
    if bg > 0:
        ev.callbacks.append(lambda e, r=r, bg=bg: self._charge(r, bg))
    return ev
E._Sim._duration = _duration; E._Sim._compute = _compute
S = ('gpipe', '1f1b')
def outside(runs, mbs, rank):
    v = [(x['cpu_per_step_s'] - x['compute_cpu_per_step_s']) / x['actions_per_step']
         for s in S if (x := runs.get(s, {}).get(str(mbs), {}).get(str(rank))) and x.get('compute_cpu_per_step_s')]
    return max(0.0, st.median(v)) if v else 0.0
modes = [('now', False, 1.0), ('bg all', True, 1.0), ('bg half', True, 0.5)]
tot = {m[0]: [] for m in modes}; bym = {m[0]: {} for m in modes}
for f in map(Path, sys.argv[1:]):
    prof = P.load(f / 'profile.json'); runs = prof.raw['overhead_probe']['runs']
    tr = E.Transport.for_profile(prof); cells = OE.cells_of(f)
    if not cells: continue
    row = []
    for name, on, frac in modes:
        MODE['on'] = on; MODE['frac'] = frac
        errs = []
        for rs in cells.values():
            r = rs[0]; mbs = r['micro_batch_size']
            BG.clear(); BG.update({k: outside(runs, mbs, k) for k in range(prof.num_stages)})
            sim = E.simulate(prof, r['schedule'], mbs, r['batch_size'], C.setting_of(r['network']),
                             transport=tr, steps=C.SIM_STEPS, record=False).step_time
            meas = st.median(x['median'] for x in rs)
            e = 100 * (sim - meas) / meas; errs.append(e)
            bym[name].setdefault(mbs, []).append(e)
        tot[name] += errs
        row.append(f"{st.fmean(map(abs, errs)):.2f} ({max(map(abs, errs)):.1f}) {st.fmean(errs):+.2f}")
    print(f"{f.parent.name[-7:]}/{f.name:12}", ' | '.join(f'{m[0]} {x}' for m, x in zip(modes, row)), flush=True)
for name, v in tot.items():
    print(f"{name:8} n={len(v)} mae {st.fmean(map(abs, v)):.2f}% signed {st.fmean(v):+.2f}% worst {max(map(abs, v)):.1f}  per mbs signed: "
          + ' '.join(f"{m}:{st.fmean(x):+.2f}/{st.fmean(map(abs,x)):.2f}" for m, x in sorted(bym[name].items())))
