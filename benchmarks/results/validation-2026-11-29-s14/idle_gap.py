"""Runs' computation durations against the profile's solo compute, by the idle gap on their core before them."""
import json, glob, statistics as st, sys, re
from collections import defaultdict
from pathlib import Path
from pipesim import profile as P
from pipesim.trace import read_csv
BINS=[0,0.0005,0.002,0.005,0.010,0.020,0.05,1e9]
def binof(g):
    for i in range(len(BINS)-1):
        if BINS[i]<=g<BINS[i+1]: return i
agg=defaultdict(list)   # (kind, bin) -> ratios (relative to each run's median ratio for that kind/stage)
aggabs=defaultdict(list); absd=defaultdict(list); solo_of={}
pat=re.compile(r'^(\d+)([FBW])(\d+)$')
for o in sys.argv[1:]:
    o=Path(o); prof=P.load(o/'profile.json'); pl=prof.host.placement if prof.host else None
    for line in open(o/'measured.jsonl'):
        r=json.loads(line); s=r['schedule']
        if s.startswith('inter'): continue   # several stages per rank: stage->rank mapping differs
        mbs=r['micro_batch_size']
        try: ev=read_csv(o/r['trace'])
        except Exception: continue
        comp=[e for e in ev if pat.match(e.action)]
        comp.sort(key=lambda e:e.start)
        bycore=defaultdict(list)
        for e in comp: bycore[pl[e.rank] if pl else e.rank].append(e)
        rat=[]
        for core,es in bycore.items():
            for i,e in enumerate(es):
                if e.step<2: continue
                prev=es[i-1] if i else None
                nxt=es[i+1] if i+1<len(es) else None
                if prev and prev.end>e.start: continue
                if nxt and nxt.start<e.end: continue
                st_,k,_=pat.match(e.action).groups(); c=prof.stages[int(st_)].at(mbs)
                if k=='F': solo=c.forward_s
                elif k=='W': solo=c.backward_weight_s if int(st_)>0 else c.backward_s
                else: solo=c.backward_input_s if s=='zbh1' else c.backward_s
                if not solo or solo<0.001: continue
                gap=e.start-prev.end if prev else 1.0
                rat.append((k+st_, binof(gap), (e.end-e.start)/solo, 0)); solo_of[k+st_]=solo
        base=defaultdict(list)
        for k,b,x,d in rat:
            if b==0: base[k].append(x)
        for k,b,x,d in rat:
            aggabs[(k[0],b)].append(x)
            if base[k] and len(base[k])>=3: agg[(k[0],b)].append(x/st.median(base[k])); absd[(k[0],mbs,b)].append((x-st.median(base[k]))*solo_of[k]*1e3)
names=['<0.5ms','0.5-2ms','2-5ms','5-10ms','10-20ms','20-50ms','>50ms']
for k in 'FBW':
    print(k, ' '.join(f"{names[b]}: {st.median(agg[(k,b)]):.3f}/{st.median(aggabs[(k,b)]):.3f} (n{len(agg[(k,b)])})" for b in range(7) if agg[(k,b)]))
print('absolute extra ms over the run\'s back-to-back median, by kind and mbs')
for k in 'FBW':
    for m in (1,2,4):
        xs=[(b,absd[(k,m,b)]) for b in range(7) if len(absd[(k,m,b)])>20]
        if xs: print(k,m,' '.join(f"{names[b]}: {st.median(v):+.2f} (n{len(v)})" for b,v in xs))
