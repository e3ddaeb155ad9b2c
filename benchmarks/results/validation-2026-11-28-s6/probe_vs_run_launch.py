import json,statistics as st,sys,time
from pathlib import Path
from runtime.launch import run_local
from runtime.speed import speed_probe
from calibrate.drift import ComputeProbe
out=Path('/tmp/exp6/o'); out.mkdir(exist_ok=True)
cp=ComputeProbe('cpu-small',3)
res={}
for i in range(4):
    for mbs in (1,4):
        for style in ('probe','validate'):
            d=out/f'{style}_{mbs}_{i}'; d.mkdir(exist_ok=True)
            argv=['--model','cpu-small','--schedule','gpipe','--micro-batch-size',str(mbs),'--batch-size',str(4*mbs if style=='probe' else 4),
                  '--steps','12' if style=='probe' else '30','--warmup','2','--out',str(d/'r.json'),'--trace',str(d/'t.csv')]
            if style=='validate':
                argv+=['--steps-log',str(d/'s.jsonl'),'--op-timeout','150','--network','default (about 0.1ms; up to 10Gbps)']
                speed_probe(); cp.measure(mbs)
            run_local('runtime',argv,3,timeout_s=300,log_dir=d/'logs',echo=False)
            r=json.loads((d/'r.json').read_text())
            cpu=[p['cpu_per_step']['median'] for p in sorted(r['per_rank'],key=lambda p:p['rank'])]
            res.setdefault((style,mbs),[]).append(cpu)
            print(style,mbs,i,' '.join(f'{1000*c:.2f}' for c in cpu),flush=True)
for mbs in (1,4):
    for r in range(3):
        a=st.median(x[r] for x in res[('probe',mbs)]); b=st.median(x[r] for x in res[('validate',mbs)])
        print(f'mbs {mbs} rank {r}: probe {1000*a:.2f} ms validate {1000*b:.2f} ms  {100*(b/a-1):+.1f}%')
