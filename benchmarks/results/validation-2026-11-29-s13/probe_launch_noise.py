"""Offline (thirteenth session): one overhead-probe launch's sd around its cell's median, against the sd between calibrations of the same session. Run from the repository root."""
import json, statistics as st, sys
R='benchmarks/results/'
groups = {'s12': ['validation-2026-11-29-s12/' + x for x in ('validate-21', 'validate-22', 'demo-4', 'demo-5', 'demo-6')],
          's11': ['validation-2026-11-29-s11/' + x for x in ('validate-18', 'validate-19', 'validate-20', 'demo-1', 'demo-2', 'demo-3')]}
for g, fs in groups.items():
    for mbs in ('1', '4'):
        within = []; meds = {}
        for f in fs:
            runs = json.load(open(R + f + '/profile.json'))['raw']['overhead_probe']['runs']
            for r in ('0', '1', '2'):
                L = [x for s in ('gpipe', '1f1b') for x in runs[s][mbs][r]['cpu_per_step_launches_s']]
                m = st.median(L)
                within += [100 * (x / m - 1) for x in L]
                meds.setdefault(r, []).append(m)
        between = [100 * st.pstdev(v) / st.fmean(v) for v in meds.values()]
        print(g, 'mbs', mbs, f'within-probe launch sd {st.pstdev(within):.2f}% (n={len(within)}; median of 6 -> ~{st.pstdev(within)/6**0.5*1.25:.2f}%)', 'between calibrations sd per rank', ' '.join(f'{b:.2f}%' for b in between))
