"""Offline (thirteenth session): benchmarks/level_tracking.py's stand-in level with an expanding mean that counts the calibration as k0 readings of 1.0. Run from the repository root with FOLDERS."""
import sys, statistics
sys.path.insert(0, 'benchmarks')  # run from the repository root
import level_tracking as LT
from pathlib import Path
def make(k0, window):
    def level_of(readings, upto=None, window_=None):
        kept = [r["cpu_drift"] for r in readings[:upto] if not r.get("disturbed") and r.get("cpu_drift")]
        kept = kept[-window:] if window else kept
        return (k0 * 1.0 + sum(kept)) / (k0 + len(kept)) if (kept or k0) else None
    return level_of
folders = sys.argv[1:]
for k0, w in ((0, 9), (0, None), (1, None), (3, None), (6, None)):
    LT.level_of = lambda readings, window=None, f=make(k0, w): f(readings)
    a = []; b = []
    for f in map(Path, folders):
        got = LT.score(f)
        if got: a += got[1]; b += got[2]
    print(f"k0={k0} window={w}: profile {LT._fmt(a)} | recal {LT._fmt(b)}")
