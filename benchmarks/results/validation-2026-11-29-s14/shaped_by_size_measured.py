"""Cap-only cells: each rank's CPU outside its computations beyond the same schedule and mbs on
the default network, against what the simulator charges (shaped_cpu per byte x bytes)."""
import json,glob,statistics as st,sys
from collections import defaultdict
from pathlib import Path
from calibrate import shaped as SH
from pipesim import profile as P
agg=defaultdict(list)
for o in sys.argv[1:]:
    o=Path(o); prof=P.load(o/'profile.json')
    if not prof.host or not prof.host.shaped_cpu: continue
    rows=[json.loads(l) for l in open(o/'measured.jsonl')]
    outs=defaultdict(list)
    for r in rows:
        try: res=json.load(open(o/r['results']))
        except Exception: continue
        oc=SH.outside_cpu(res)
        if oc: outs[(r['schedule'],r['network'],r['micro_batch_size'])].append(oc)
    med={k:[st.median(x[i] for x in v) for i in range(len(v[0]))] for k,v in outs.items()}
    for (s,n,m),v in med.items():
        if not n.startswith('bandwidth'): continue
        d=[k for k in med if k[0]==s and k[2]==m and k[1].startswith('default')]
        if not d: continue
        base=med[d[0]]
        rate=SH.rate_of(n.split()[1])
        mb=4//m
        b=SH.bytes_per_step(prof,m,mb)
        if s.startswith('inter'): b=[x*2 for x in b]  # rough: v=2 doubles hops
        charge=[prof.host.cpu_per_byte(rate)*x for x in b]
        extra=[a-c for a,c in zip(v,base)]
        agg[(s,m,n)].append((sum(extra),sum(charge)))
for k in sorted(agg):
    e=[x[0]*1e3 for x in agg[k]]; c=[x[1]*1e3 for x in agg[k]]
    print(f"{k[0]:16s} mbs{k[1]} {k[2]:16s} n{len(e)} measured extra {st.mean(e):5.2f} ms (sd {st.stdev(e) if len(e)>1 else 0:.2f})  charged {st.mean(c):5.2f} ms  ratio {st.mean(e)/st.mean(c):.2f}")
