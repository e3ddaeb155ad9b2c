"""Offline (sixteenth session; a copy of the fifteenth's script over sessions 15-16, the runtime's own split): mean +- sd, per (schedule, micro-batch size), of the signed prediction error (sim),
the replay error (replay), the error at the runs' speed (speed) and the compute probe's drift (cdrift), over the kept
folders of the sessions named by the glob below (machine B). Run from the repository root: python3 THIS"""
import json,glob,statistics as st,sys
from collections import defaultdict
t=defaultdict(lambda: defaultdict(list))
for f in sorted(glob.glob('benchmarks/results/validation-2026-11-29-s1[5-6]/validate*/comparison.json')):
    d=json.load(open(f))
    for c in d['cells']:
        k=(c['schedule'],c['micro_batch_size'])
        m=c['measured_s']
        t[k]['sim'].append(100*(c['simulated_s']/m-1))
        if c.get('replay_s'): t[k]['replay'].append(100*(c['replay_s']/m-1))
        if c.get('speed_replay_s'): t[k]['speed'].append(100*(c['speed_replay_s']/m-1))
        if c.get('compute_drift'): t[k]['cdrift'].append(100*(c['compute_drift']-1))
for k in sorted(t):
    print(k, '  '.join(f"{n}: {st.mean(v):+5.1f}±{st.stdev(v):.1f}" for n,v in t[k].items()))
