"""Offline: charge the cap's CPU per byte with a message-size factor taken from a paired seed folder's GPipe runs."""
import json, statistics as st, sys, math
from collections import defaultdict
from pathlib import Path
from calibrate import shaped as SH
from pipesim import profile as P, engine as E
from loop import compare as C, measured as M
sys.path.insert(0,'benchmarks')

def gpipe_size_ratio(folder):
    folder=Path(folder); prof=P.load(folder/'profile.json')
    outs=defaultdict(list)
    for line in open(folder/'measured.jsonl'):
        r=json.loads(line)
        if r['schedule']!='gpipe': continue
        oc=SH.outside_cpu(json.load(open(folder/r['results'])))
        if oc: outs[(r['network'],r['micro_batch_size'])].append(sum(oc))
    med={k:st.median(v) for k,v in outs.items()}
    q={}
    for rate_lbl in ('1Gbps','2Gbps','5Gbps'):
        n='bandwidth '+rate_lbl; d=[k for k in med if k[0].startswith('default')][0][0]
        s={m:(med[(n,m)]-med[(d,m)])/sum(SH.bytes_per_step(prof,m,4//m)) for m in (1,2,4)}
        q[SH.rate_of(rate_lbl)]={m:s[m]/s[1] for m in (1,2,4)}
    return q

orig=E.Simulation._start if hasattr(E,'Simulation') else None
Q={}; B1=[65536]
_orig=E._Sim._start
def _start(self, m):
    k=self.shaped.get((m.src,m.dst))
    if k and Q:
        rate=self.setting.for_link(m.src,m.dst).bandwidth_bps
        q=Q[min(Q,key=lambda r:abs(math.log(r/rate)))]
        x=min(1.0,max(0.0,math.log(m.nbytes/B1[0])/math.log(4)))
        f=1+(q[4]-1)*x
        self.shaped[(m.src,m.dst)]=k*f
        try: _orig(self,m)
        finally: self.shaped[(m.src,m.dst)]=k
    else: _orig(self,m)
E._Sim._start=_start

def score(target):
    target=Path(target); prof=P.load(target/'profile.json')
    B1[0]=prof.stages[0].at(1).activation_bytes
    rows=C.build_rows(prof,M.read(target/'measured.jsonl'),E.Transport.for_profile(prof))
    return {(r['schedule'],r['network'],r['micro_batch_size']):100*(r['simulated_s']/r['measured_s']-1) for r in rows}

pairs=[('/tmp/fresh-s12/out/validate','/tmp/fresh-s12/out/validate-new'),('/tmp/fresh-s12b/out/validate','/tmp/fresh-s12c/out/validate-new'),
       ('/tmp/fresh-s13/out/validate','/tmp/fresh-s13/out/validate-new'),('/tmp/fresh-s13b/out/validate','/tmp/fresh-s13b/out/validate-new')]
allb=defaultdict(list); alla=defaultdict(list)
for seed,new in pairs:
    q=gpipe_size_ratio(seed)
    print(seed, {f"{r/1e9:g}G":{m:round(v,2) for m,v in d.items()} for r,d in q.items()})
    for tgt in (seed,new):
        Q.clear(); before=score(tgt)
        Q.update(q); after=score(tgt); Q.clear()
        by=defaultdict(lambda:[[],[]])
        for k in before:
            by[k[0]][0].append(abs(before[k])); by[k[0]][1].append(abs(after[k]))
            allb[k[0]].append(abs(before[k])); alla[k[0]].append(abs(after[k]))
        print('   ',tgt.split('/')[2], tgt.split('/')[-1], ' | '.join(f"{s}: {st.mean(a):.2f}% -> {st.mean(b):.2f}% (worst {max(a):.1f} -> {max(b):.1f})" for s,(a,b) in by.items()))
print('ALL', ' | '.join(f"{s}: {st.mean(allb[s]):.2f}% -> {st.mean(alla[s]):.2f}%" for s in allb))
