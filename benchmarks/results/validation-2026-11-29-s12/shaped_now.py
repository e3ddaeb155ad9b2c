import sys, time, json
from pipesim import profile as P
from calibrate.shaped import probe, summary_lines
prof = P.load(sys.argv[1])
t = time.time()
p2 = probe(prof, 3, "cpu-small", 1, [5e9, 2e9, 1e9], progress=lambda m: print(m, f"[{time.time()-t:.0f} s]", flush=True))
print("\n".join(summary_lines(p2)))
for r in p2.raw["shaped_cpu_probe"]["rates"]:
    print(r["network"], "excess ms", [round(1e3*x, 2) for x in r["excess_s"]], "fitted", [round(1e3*x, 2) for x in r["fitted_excess_s"]])
print("default launches", [[round(1e3*x,2) for x in l] for l in p2.raw["shaped_cpu_probe"]["default_outside_cpu_launches_s"]])
print(f"{time.time()-t:.0f} s")
