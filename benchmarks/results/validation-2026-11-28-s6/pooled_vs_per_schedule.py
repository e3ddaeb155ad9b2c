import sys,json,statistics
sys.path.insert(0,'benchmarks')
from step_overhead import without_step, SCHEDULES
from dataclasses import replace
from pathlib import Path
from loop import compare as C
from pipesim import engine as E, profile as P
def per_schedule(prof):
    runs=prof.raw['overhead_probe']['runs']; stages=[]
    for r,st in enumerate(prof.stages):
        comp={}
        for m,c in st.compute.items():
            by=dict(c.overhead_by_schedule_s)
            for s in SCHEDULES:
                rec=runs[s][str(m)][str(r)]
                by[s]=max(0.0, statistics.median((x-rec['solo_compute_s'])/rec['actions_per_step'] for x in rec['cpu_per_step_launches_s']))
            comp[m]=replace(c, overhead_by_schedule_s=by, step_overhead_s=0.0)
        stages.append(replace(st, compute=comp))
    return replace(prof, stages=tuple(stages))
tot={'pooled':[],'per_schedule':[]}
for f in map(Path, sys.argv[1:]):
    prof=P.load(f/'profile.json'); t=E.Transport.for_profile(prof)
    variants={'pooled':without_step(prof),'per_schedule':per_schedule(prof)}
    cells={}
    for line in (f/'measured.jsonl').read_text().splitlines():
        r=json.loads(line)
        if r['schedule'] in SCHEDULES and not r.get('disturbed'): cells.setdefault(r['key'],[]).append(r)
    res={k:{} for k in tot}
    for rs in cells.values():
        r=rs[0]; s,m,b=r['schedule'],r['micro_batch_size'],r['batch_size']; net=C.setting_of(r['network'])
        meas=statistics.median(x['median'] for x in rs)
        for how,p in variants.items():
            sim=E.simulate(p,s,m,b,net,transport=t,steps=C.SIM_STEPS,record=False).step_time
            res[how].setdefault(s,[]).append(abs(100*(sim-meas)/meas))
    print(f.name, ' | '.join(f"{k} " + ' / '.join(f"{statistics.fmean(v):.1f}%" for v in d.values()) + f" ({max(max(v) for v in d.values()):.1f}%)" for k,d in res.items()))
    for k in tot: tot[k]+=[x for v in res[k].values() for x in v]
print('all', ' '.join(f"{k} {statistics.fmean(v):.2f} ({max(v):.1f})" for k,v in tot.items()))
