"""Offline (fourteenth session): how much of each validation's error is systematic per cell? Each folder of
sessions 11-13 scored as is, with each cell's mean error in the other folders taken off (leave one folder out), and
with the folder's own mean error per schedule (its level) taken off. Run from the repository root."""
import json,glob,statistics as st,sys
from collections import defaultdict
from pathlib import Path
from loop import compare as C, measured as M
from pipesim import engine as E, profile as P
folders=[f for f in sorted(glob.glob('benchmarks/results/validation-2026-11-29-s1[123]/validate*'))]
data={}
for f in folders:
    prof=P.load(Path(f)/'profile.json'); rows=C.build_rows(prof,M.read(Path(f)/'measured.jsonl'),E.Transport.for_profile(prof))
    data[f]={(r['schedule'],r['network'],r['micro_batch_size']):100*(r['simulated_s']/r['measured_s']-1) for r in rows}
json.dump({f:{'|'.join(map(str,k)):v for k,v in d.items()} for f,d in data.items()},open('/tmp/s14/errs.json','w'))
for f,d in data.items():
    others=[data[g] for g in data if g!=f]
    by=defaultdict(list); deb=defaultdict(list)
    for k,e in d.items():
        bias=st.mean([o[k] for o in others if k in o])
        by[k[0]].append(abs(e)); deb[k[0]].append(abs(e-bias))
    # also remove folder-level per-schedule mean (level) 
    lvl=defaultdict(list)
    for k,e in d.items(): lvl[k[0]].append(e)
    print(Path(f).name, ' | '.join(f"{s[:6]} {st.mean(by[s]):.2f} -> debiased {st.mean(deb[s]):.2f} worst {max(by[s]):.1f}->{max(deb[s]):.1f}; level {st.mean(lvl[s]):+.1f} -> level-removed {st.mean(abs(e-st.mean(lvl[s])) for e in lvl[s]):.2f}" for s in by))
