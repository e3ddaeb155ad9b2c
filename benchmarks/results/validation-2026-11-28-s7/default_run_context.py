"""Compute in context from the default-network runs, tried offline (seventh session) and not built.

Every non-default GPipe / 1F1B cell of a validation folder is predicted from the default
cell of the same schedule and micro-batch size in the same folder: its runs' per-action
durations with the rank's own time before each (pipesim.replay.durations_from_trace, as
the replay takes them), median per (rank, action) over the measured steps, fed to the
engine as a replay's durations. Printed beside the profile-only prediction, per folder,
in total, and per (setting, mbs). The folders need their traces (runs/*/run*/trace.csv),
which the repository does not keep: it was run on the windows' own output folders,

    python default_run_context.py /tmp/fresh-s5/out/validate /tmp/fresh-s5b/out/validate \
        /tmp/fresh-s6/out/validate /tmp/fresh-s6b/out/validate /tmp/fresh-s6c/out/validate /tmp/fresh-s6*/out/demo-*

and printed default_run_context.txt."""
import json,statistics,sys,re
from pathlib import Path
from loop import compare as C
from pipesim import engine as E, profile as P
from pipesim.replay import durations_from_trace
from pipesim.trace import read_csv
def med(x): return statistics.median(x)
allE={"prof":[],"ctx":[]}
BY={}
for d in map(Path,sys.argv[1:]):
    prof=P.load(d/"profile.json"); tr=E.Transport.for_profile(prof)
    cells={}
    for l in (d/"measured.jsonl").read_text().splitlines():
        r=json.loads(l) if l.strip() else None
        if r and not r.get("disturbed") and r["schedule"] in ("gpipe","1f1b"): cells.setdefault(r["key"],[]).append(r)
    ctx={}
    for k,rs in cells.items():
        s,net,m=k.split("|")
        if not net.startswith("default"): continue
        acc={}
        for r in rs:
            ev=read_csv(d/r["trace"]); du=durations_from_trace(ev)
            for (rank,step,a),v in du.items():
                if step>=2: acc.setdefault((rank,a),[]).append(v)
        ctx[(s,int(m))]={k2:med(v) for k2,v in acc.items()}
    E1=[];E2=[]
    for k,rs in cells.items():
        s,net,m=k.split("|"); m=int(m)
        if net.startswith("default"): continue
        r=rs[0]; meas=med([x["median"] for x in rs]); st=C.setting_of(net)
        sim=E.simulate(prof,s,m,r["batch_size"],st,transport=tr,steps=C.SIM_STEPS,record=False).step_time
        cx=ctx[(s,m)]
        sim2=E.simulate(prof,s,m,r["batch_size"],st,transport=tr,steps=C.SIM_STEPS,record=False,durations=lambda rk,step,a: cx.get((rk,a),0.0)).step_time
        E1.append(100*(sim/meas-1)); E2.append(100*(sim2/meas-1)); BY.setdefault((net.split(' (')[0],m),[]).append((E1[-1],E2[-1]))
    if not E1: continue
    allE["prof"]+=E1; allE["ctx"]+=E2
    f=lambda v: f"{statistics.mean(map(abs,v)):.1f} ({statistics.mean(v):+.1f}, w{max(map(abs,v)):.1f})"
    print(f"{str(d):32s} n={len(E1)} profile {f(E1)}  default-run ctx {f(E2)}",flush=True)
f=lambda v: f"{statistics.mean(map(abs,v)):.2f} ({statistics.mean(v):+.2f}, w{max(map(abs,v)):.1f})"
print("all", len(allE["prof"]), "profile", f(allE["prof"]), "ctx", f(allE["ctx"]))

for k in sorted(BY):
    v=BY[k]; print(f"{k[0]:28s} mbs{k[1]} profile {statistics.mean(a for a,b in v):+5.1f}  ctx {statistics.mean(b for a,b in v):+5.1f}  (sd {statistics.pstdev([a for a,b in v]):.1f} / {statistics.pstdev([b for a,b in v]):.1f})")
