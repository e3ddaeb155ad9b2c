"""Offline (thirteenth session): the probe's overhead per action split into CPU outside the computations (per micro-batch size) and the computations' in-context CPU over the solo compute, the latter pooled over micro-batch sizes, ranks or taken at the smallest size. Run from the repository root: python benchmarks/results/validation-2026-11-29-s13/overhead_split_pooled.py FOLDERS"""
import json, statistics, sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, 'benchmarks')  # run from the repository root
import overhead_estimators as OE
from pipesim import engine as E
from pipesim import profile as P
S = ("gpipe", "1f1b")
def recs(runs, m=None, rank=None):
    out=[]
    for s in S:
        for mm, per in runs.get(s, {}).items():
            if m is not None and int(mm)!=m: continue
            for r, x in per.items():
                if rank is not None and int(r)!=rank: continue
                if x.get('compute_cpu_per_step_s'): out.append((s,int(mm),int(r),x))
    return out
def est(runs, how, mbs, rank):
    here = recs(runs, mbs, rank)
    if not here: return None
    n = here[0][3]['actions_per_step']; solo = statistics.median(x['solo_compute_s'] for *_,x in here)
    outside = statistics.median((x['cpu_per_step_s']-x['compute_cpu_per_step_s'])/x['actions_per_step'] for *_,x in here)
    if how=='split_rank':
        pool = recs(runs, None, rank)
    elif how=='split_all':
        pool = recs(runs)
    elif how=='split_small':
        ms = min(m for _,m,_,_ in recs(runs)); pool = recs(runs, ms, rank)
    elif how=='split_here':
        pool = here
    elif how=='outside':
        return max(0.0, outside)
    ratio = statistics.median(x['compute_cpu_per_step_s']/x['solo_compute_s'] for *_,x in pool)
    return max(0.0, outside + (ratio-1)*solo/n)
HOWS=('pooled','split_here','split_rank','split_all','split_small','outside')
def rebuilt(prof, how):
    if how=='pooled': return OE.rebuilt(prof,'pooled')
    runs = prof.raw['overhead_probe']['runs']; stages=[]
    for k, st in enumerate(prof.stages):
        comp={}
        for m,c in st.compute.items():
            by=dict(c.overhead_by_schedule_s or {})
            x=est(runs,how,m,k)
            if x is not None:
                for s in S: by[s]=x
            comp[m]=replace(c, overhead_by_schedule_s=by)
        stages.append(replace(st, compute=comp))
    return replace(prof, stages=tuple(stages))
every={h:[] for h in HOWS}; sgn={h:[] for h in HOWS}
for f in map(Path, sys.argv[1:]):
    prof=P.load(f/'profile.json')
    runs=(prof.raw or {}).get('overhead_probe',{}).get('runs')
    if not runs or not recs(runs): print(f, 'no split data'); continue
    tr=E.Transport.for_profile(prof); cells=OE.cells_of(f)
    row=[]
    for h in HOWS:
        e=[x for *_,x in OE.errors(rebuilt(prof,h), cells, tr)]
        every[h]+=[abs(x) for x in e]; sgn[h]+=e
        row.append(f"{statistics.fmean(map(abs,e)):.2f} ({max(map(abs,e)):.1f})")
    print(f.name, ' | '.join(f'{h} {r}' for h,r in zip(HOWS,row)))
for h in HOWS:
    v=every[h]; print(f"{h:12} n={len(v)} mae {statistics.fmean(v):.2f}% signed {statistics.fmean(sgn[h]):+.2f}% p90 {statistics.quantiles(v,n=10)[-1]:.1f} worst {max(v):.1f}")
