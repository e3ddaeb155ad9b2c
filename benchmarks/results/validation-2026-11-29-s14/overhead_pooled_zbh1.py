"""ZB-H1's overhead per action from its own launches, or pooled with GPipe's and 1F1B's (per step or per action)."""
import sys, statistics as stt, glob
from dataclasses import replace
from pathlib import Path
sys.path.insert(0,'benchmarks')
from overhead_launches import errors, _runs
from calibrate.overhead import virtual_overhead
from pipesim import profile as P
def excess(r,x): return x - r['solo_compute_s'] - r.get('step_overhead_s',0.0)
def variant(prof, how):
    runs=_runs(prof); stages=[]
    for i,st in enumerate(prof.stages):
        comp={}
        for m,c in st.compute.items():
            by=dict(c.overhead_by_schedule_s or {})
            z=runs.get('zbh1',{}).get(str(m),{}).get(str(i))
            g=[r for s in ('gpipe','1f1b') if (r:=runs.get(s,{}).get(str(m),{}).get(str(i)))]
            if z and g:
                own=[excess(z,x) for x in z['cpu_per_step_launches_s']]
                gp=[excess(r,x) for r in g for x in r['cpu_per_step_launches_s']]
                gpa=[excess(r,x)/r['actions_per_step'] for r in g for x in r['cpu_per_step_launches_s']]
                n=z['actions_per_step']
                if how=='own': v=stt.median(own)/n
                elif how=='step_gp': v=stt.median(gp)/n
                elif how=='step_all': v=stt.median(own+gp)/n
                elif how=='action_gp': v=stt.median(gpa)
                elif how=='action_all': v=stt.median(gpa+[e/n for e in own])
                elif how=='mean_own_stepgp': v=(stt.median(own)+stt.median(gp))/2/n
                by['zbh1']=max(0.0,v)
            comp[m]=replace(c,overhead_by_schedule_s=by)
        stages.append(replace(st,compute=comp))
    return virtual_overhead(replace(prof,stages=tuple(stages)))
hows=['own','step_gp','step_all','action_gp','action_all','mean_own_stepgp']
tot={h:[] for h in hows}
for f in map(Path, sys.argv[1:]):
    prof=P.load(f/'profile.json')
    if 'zbh1' not in _runs(prof): print(f,'no zbh1 probe'); continue
    line=[]
    for h in hows:
        e=[abs(x) for s,x in errors(variant(prof,h),f) if s=='zbh1']
        sg=[x for s,x in errors(variant(prof,h),f) if s=='zbh1']
        tot[h]+=e
        line.append(f"{h} {stt.mean(e):.2f}% ({max(e):.1f}, {stt.mean(sg):+.1f})")
    print(f.parent.name[-8:], f.name, ' | '.join(line))
print('ALL', ' | '.join(f"{h} {stt.mean(v):.2f}% worst {max(v):.1f} n{len(v)}" for h,v in tot.items()))
