"""Small helpers every layer shares: atomic writes, JSONL appends, quantiles, lists, paths.

One rule each, used everywhere:

* :func:`write_json_atomic` / :func:`write_text_atomic`: write a temporary file in the
  same folder and rename it, so a crash never leaves half a file.
* :func:`append_jsonl`: one ``os.write`` per record, so lines from several processes
  never interleave; optionally ``fsync``.
* :func:`quantile`: linear interpolation between order statistics (numpy's default and
  ``statistics.quantiles(method="inclusive")``): p10, p25, p75 and p90 everywhere.
* :func:`parse_int_list`: ``"1,2,4"`` -> ``[1, 2, 4]`` with an error naming the flag.
* :func:`output_path` / :func:`output_dir`: where a command may write a file or folder the user named.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, doc: Any, force: bool = True, indent: int | None = 2) -> None:
    """Write ``doc`` as JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(doc, indent=indent) + "\n", force=force)


def append_jsonl(path: str | os.PathLike, rec: dict, fsync: bool = False) -> None:
    """Append one JSON line with a single write (several writers never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec) + "\n").encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSONL file; a line cut by a crash (not valid JSON) is skipped."""
    out: list[dict] = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        if line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def quantile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between order statistics."""
    if not samples:
        raise ValueError("no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    xs = sorted(samples)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def parse_int_list(text: str, what: str, *, unique_sorted: bool = False) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; positive integers only, the error names ``what``."""
    try:
        vals = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be positive integers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"{what} must be positive integers separated by commas, got {text!r}")
    return sorted(set(vals)) if unique_sorted else vals


def output_path(path: str | os.PathLike, what: str) -> Path:
    """Check a file path the user named for output, and return it.

    Its folder must exist; a missing folder is created only when it lies under the
    current folder (and that is said on stderr). Anything else is refused with a
    ``ValueError`` naming the flag, so that a typo never scatters folders over the disk.
    """
    p = Path(path)
    if str(path).strip() == "":
        raise ValueError(f"{what}: empty path")
    if p.exists() and p.is_dir():
        raise ValueError(f"{what}: {p} is a folder; name a file")
    parent = p.parent
    if parent.is_dir():
        return p
    if parent.exists():
        raise ValueError(f"{what}: {parent} is not a folder")
    cwd = Path.cwd().resolve()
    try:
        parent.resolve().relative_to(cwd)
    except ValueError:
        raise ValueError(f"{what}: folder {parent} does not exist; create it first "
                         "(only folders under the current one are created)") from None
    parent.mkdir(parents=True, exist_ok=True)
    print(f"created folder {parent} for {what}", file=sys.stderr)
    return p


def output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check a folder the user named for output (e.g. ``--log-dir``), create it, and return it.

    An existing folder is used as it is; a missing one is created when its parent
    exists or when it lies under the current folder (said on stderr). Anything else is
    refused with a ``ValueError`` naming the flag, as :func:`output_path` does.
    """
    p = Path(path)
    if str(path).strip() == "":
        raise ValueError(f"{what}: empty path")
    if p.is_dir():
        return p
    if p.exists():
        raise ValueError(f"{what}: {p} is a file, not a folder")
    if not p.parent.is_dir():
        if p.parent.exists():
            raise ValueError(f"{what}: {p.parent} is not a folder")
        try:
            p.parent.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            raise ValueError(f"{what}: folder {p.parent} does not exist; create it first "
                             "(only folders under the current one are created)") from None
    p.mkdir(parents=True)
    print(f"created folder {p} for {what}", file=sys.stderr)
    return p


def stop_child(proc, timeout_s: float) -> None:
    """End a child that exits when its stdin closes: close it, wait ``timeout_s``, then kill it."""
    import subprocess

    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def backend_for(device: str, backend: str = "auto") -> str:
    """The torch.distributed backend: ``backend`` unless ``auto``, then nccl on CUDA, else gloo."""
    if backend != "auto":
        return backend
    return "nccl" if str(device).startswith("cuda") else "gloo"
