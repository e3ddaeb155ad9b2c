"""Offline (fourteenth session): every kept validation folder whose path holds one of ARGS (e.g. s11 s12 s13),
re-simulated from its own profile with today's model; the signed prediction error per (schedule, setting, micro-batch
size), mean and sd over the folders. Run from the repository root: python3 THIS s11 s12 s13"""
import sys,glob,statistics as st,json
from collections import defaultdict
from pathlib import Path
from loop import compare as C, measured as M, report as R
from pipesim import engine as E, profile as P
tab=defaultdict(list)
for folder in sorted([f for f in glob.glob('benchmarks/results/validation-2026-11-2*/validate*') if any(s in f for s in sys.argv[1:])]):
    folder=Path(folder)
    prof=P.load(folder/'profile.json'); cells=M.read(folder/'measured.jsonl')
    rows=C.build_rows(prof,cells,E.Transport.for_profile(prof))
    s=R.summarize(rows)
    print(folder.parent.name[-10:], folder.name, s.last_line())
    for r in rows:
        tab[(r['schedule'],r['network'][:26],r['micro_batch_size'])].append(100*(r['simulated_s']/r['measured_s']-1))
json.dump({'|'.join(map(str,k)):v for k,v in tab.items()},open('/tmp/s14/tab.json','w'))
nets=sorted({k[1] for k in tab})
for s in sorted({k[0] for k in tab}):
    print(s)
    for n in nets:
        print(f"  {n:27s}", '  '.join(f"m{m}: {st.mean(tab[(s,n,m)]):+5.1f}±{st.stdev(tab[(s,n,m)]):.1f}" for m in (1,2,4) if tab[(s,n,m)]))
