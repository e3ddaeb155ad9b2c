"""Offline upper bound: (1) the runtime's CPU outside its computations charged in the background, (2) an idle
penalty on a computation that starts on a core idle for a while, both, against today's model; prediction and
at-the-run's-speed errors over kept folders (traces not needed)."""
import json, statistics as st, sys, math; sys.path.insert(0,'benchmarks')
from collections import defaultdict
from pathlib import Path
from loop import compare as C
from pipesim import engine as E, profile as P, context as CX, schedule as S
MODE={'bg':False,'pen':0.0}
PEN=[(0.0005,0.0),(0.002,0.1e-3),(0.005,0.15e-3),(0.010,0.25e-3),(0.020,0.35e-3),(1e9,0.45e-3)]
def pen(g):
    for hi,v in PEN:
        if g<hi: return v
    return PEN[-1][1]
BG={}
orig_run=E.SharedCPU.run; orig_wake=E.SharedCPU._wake
def run(self, work):
    if not self.jobs and getattr(self,'_pending_pen',None):
        work+=self._pending_pen
    self._pending_pen=None
    return orig_run(self, work)
def _wake(self):
    orig_wake(self)
    if not self.jobs: self.idle_since=self.env.now
E.SharedCPU.run=run; E.SharedCPU._wake=_wake
orig_dur=E._Sim._duration
def _duration(self,a,split):
    d=orig_dur(self,a,split); bg=0.0
    if MODE['bg']: bg=min(BG.get(a.stage,0.0), self.comp[a.stage].overhead(self.schedule))
    self._pending_bg=bg
    return d-bg
orig_comp=E._Sim._compute
def _compute(self,r,dur):
    if MODE['pen'] and self.core_of is not None:
        core=self.core_of[r]
        if not core.jobs:
            g=self.env.now-getattr(core,'idle_since',0.0)
            core._pending_pen=MODE['pen']*pen(g)
    ev=orig_comp(self,r,dur)
    bg=getattr(self,'_pending_bg',0.0); self._pending_bg=0.0
    if bg>0: ev.callbacks.append(lambda e,r=r,bg=bg: self._charge(r,bg))
    return ev
E._Sim._duration=_duration; E._Sim._compute=_compute
def outside(runs,sched,mbs,rank):
    grp=('gpipe','1f1b') if sched in ('gpipe','1f1b') else (sched,)
    v=[(x['cpu_per_step_s']-x['compute_cpu_per_step_s'])/x['actions_per_step'] for s in grp
       if (x:=runs.get(s,{}).get(str(mbs),{}).get(str(rank))) and x.get('compute_cpu_per_step_s')]
    return max(0.0,st.median(v)) if v else 0.0
modes=[('now',False,0.0),('pen',False,1.0),('bg',True,0.0),('bg+pen',True,1.0),('bg+2pen',True,2.0)]
tot={m[0]:defaultdict(list) for m in modes}
for f in map(Path,sys.argv[1:]):
    prof=P.load(f/'profile.json'); runs=prof.raw['overhead_probe']['runs']; tr=E.Transport.for_profile(prof)
    v=prof.raw['overhead_probe'].get('stages_per_rank') or 2
    import overhead_launches as OL; cells=OL.cells_of(f)
    fac=defaultdict(list)
    for line in open(f/'measured.jsonl'):
        r=json.loads(line)
        if r.get('cpu_factors'): fac[(r['schedule'],r['network'],r['micro_batch_size'])].append(r['cpu_factors'])
    line=[]
    for name,bg,pn in modes:
        MODE['bg']=bg; MODE['pen']=pn
        pe=[];se=[]
        for c in cells:
            s=c['schedule']; m=c['micro_batch_size']; kw={'stages_per_rank':v} if s in S.VIRTUAL else {}
            BG.clear(); BG.update({k:outside(runs,s,m,k) for k in range(prof.num_stages)})
            net=C.setting_of(c['network'])
            sim=E.simulate(prof,s,m,c['batch_size'],net,transport=tr,steps=3,record=False,**kw).step_time
            e=100*(sim/c['measured_s']-1); pe.append(e); tot[name][('pred',s,m)].append(e)
            fs=fac.get((s,c['network'],m))
            if fs:
                ff=[st.mean(x[i] for x in fs) for i in range(len(fs[0]))]
                sp=E.simulate(prof.ranks_scaled(ff),s,m,c['batch_size'],net,transport=tr,steps=3,record=False,**kw).step_time
                e2=100*(sp/c['measured_s']-1); se.append(e2); tot[name][('speed',s,m)].append(e2)
        line.append(f"{name} {st.mean(map(abs,pe)):.2f}/{st.mean(map(abs,se)):.2f}")
    print(f.parent.name[-4:], f.name, ' | '.join(line), flush=True)
for name in tot:
    d=tot[name]
    for kind in ('pred','speed'):
        allv=[x for k,vv in d.items() if k[0]==kind for x in vv]
        per=' '.join(f"{s[:5]}m{m}:{st.mean(d[(kind,s,m)]):+.1f}" for s in ('gpipe','1f1b','zbh1','interleaved1f1b') for m in (1,2,4) if d[(kind,s,m)])
        print(f"{name:8s} {kind:5s} mae {st.mean(map(abs,allv)):.2f} signed {st.mean(allv):+.2f} worst {max(map(abs,allv)):.1f} | {per}")
