import sys,json,statistics
sys.path.insert(0,'benchmarks')
from step_overhead import without_step, SCHEDULES
from dataclasses import replace
from pathlib import Path
from loop import compare as C
from pipesim import engine as E, profile as P
def spread(prof, schedule, m, n):
    # per-step part spread over the rank's computations at this cell's count
    work=E.rank_work(replace(prof, stages=tuple(replace(st, compute={k: replace(c, step_overhead_s=0.0) for k,c in st.compute.items()}) for st in prof.stages)), schedule, m, n)
    stages=[]
    for r,st in enumerate(prof.stages):
        c=st.compute[m]; a=c.step_overhead_s; acts=work[r][1]
        by={k: v + a/acts for k,v in (c.overhead_by_schedule_s or {}).items()}
        stages.append(replace(st, compute={**st.compute, m: replace(c, overhead_by_schedule_s=by, overhead_s=c.overhead_s + a/acts, step_overhead_s=0.0)}))
    return replace(prof, stages=tuple(stages))
tot={'with':[],'without':[],'spread':[]}
for f in map(Path, sys.argv[1:]):
    prof=P.load(f/'profile.json'); t=E.Transport.for_profile(prof); wo=without_step(prof)
    cells={}
    for line in (f/'measured.jsonl').read_text().splitlines():
        r=json.loads(line)
        if r['schedule'] in SCHEDULES and not r.get('disturbed'): cells.setdefault(r['key'],[]).append(r)
    res={k:[] for k in tot}
    for rs in cells.values():
        r=rs[0]; s,m,b=r['schedule'],r['micro_batch_size'],r['batch_size']; net=C.setting_of(r['network'])
        meas=statistics.median(x['median'] for x in rs)
        for how,p in (('with',prof),('without',wo),('spread',spread(prof,s,m,b//m))):
            sim=E.simulate(p,s,m,b,net,transport=t,steps=C.SIM_STEPS,record=False).step_time
            res[how].append(abs(100*(sim-meas)/meas))
    print(f, ' '.join(f"{k} {statistics.fmean(v):.2f} ({max(v):.1f})" for k,v in res.items()))
    for k in tot: tot[k]+=res[k]
print('all', ' '.join(f"{k} {statistics.fmean(v):.2f} ({max(v):.1f})" for k,v in tot.items()))
