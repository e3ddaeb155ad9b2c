"""The README and docs/*.md: short front door, commands that exist, links that resolve.

- README.md stays a front door: at most 160 lines, the demo and the test command on its
  first screen.
- Every ``pipesim VERB ...`` in a ```sh block names a verb that exists, and each ``--flag``
  it uses appears in ``python -m loop VERB [ACTION] --help``.
- ``python benchmarks/X.py`` / ``bash benchmarks/X.sh`` name files that exist, and
  ``-m module`` (python or torchrun) names a project module that exists.
- Every relative markdown link points to an existing path (and, with ``#anchor``, to a
  heading of that markdown file).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUB_VERBS = {"testbed", "netem"}  # verbs whose first argument is an action with its own flags
SEPARATORS = {"&&", "||", ";", "|"}
PROJECT_PACKAGES = {"pipesim", "testbed", "runtime", "calibrate", "loop"}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def sh_blocks(path: Path) -> list[str]:
    """The bodies of the ```sh code blocks of a markdown file."""
    return re.findall(r"^```sh[ \t]*\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block as token lists: continued lines joined, comments dropped,
    split at && || ; |, optional-argument brackets stripped."""
    text = re.sub(r"\\\n", " ", block)
    out = []
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in prose-like text: check what is before it
            tokens = line.split()
        cur: list[str] = []
        for tok in tokens:
            if tok in SEPARATORS:
                out.append(cur)
                cur = []
                continue
            if tok.endswith(";") and tok != ";":
                cur.append(tok[:-1])
                out.append(cur)
                cur = []
                continue
            tok = tok.lstrip("[")  # [--flag
            while tok.endswith("]") and tok.count("]") > tok.count("["):  # VALUE]  (keeps '.[test]')
                tok = tok[:-1]
            if tok:
                cur.append(tok)
        out.append(cur)
    return [c for c in out if c]


def _strip_prefix(cmd: list[str]) -> list[str]:
    """Drop leading VAR=value assignments and sudo."""
    i = 0
    while i < len(cmd) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[i]) or cmd[i] == "sudo"):
        i += 1
    return cmd[i:]


def all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for block in sh_blocks(doc):
            for cmd in commands(block):
                cmd = _strip_prefix(cmd)
                if cmd:
                    found.append((_rel(doc), cmd))
    return found


def pipesim_commands() -> list[tuple[str, list[str]]]:
    return [(doc, cmd) for doc, cmd in all_commands() if cmd[0] == "pipesim"]


@functools.cache
def help_text(*verb: str) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "loop", *verb, "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    return out.returncode, out.stdout + out.stderr


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines (at most 160): move details to docs/"
    first = "\n".join(lines[:25])
    assert "pipesim demo" in first, "README.md's first 25 lines lack 'pipesim demo'"
    assert "python3 -m pytest -q tests" in first, "README.md's first 25 lines lack 'python3 -m pytest -q tests'"


def test_readme_set_up_installs_what_the_tests_need():
    first = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    for pkg in ("iperf3", "iputils-ping", "iproute2", "torch=="):
        assert pkg in first, f"README.md's set-up does not install {pkg}"


def test_the_docs_have_pipesim_commands():
    """The parser finds the commands at all (guards the checks below from passing on nothing)."""
    verbs = {cmd[1] for _, cmd in pipesim_commands() if len(cmd) > 1}
    assert {"demo", "grid", "simulate", "calibrate", "run", "validate", "testbed", "netem"} <= verbs, verbs


def test_commands_parse():
    cmds = commands('pipesim simulate --schedule 1f1b \\\n    [--profile P] [--queue link|rank] # note --nope\n'
                    "pip install -e '.[test]' && pipesim demo --out \"a b\"; pipesim grid [--x [--y]]")
    assert cmds == [["pipesim", "simulate", "--schedule", "1f1b", "--profile", "P", "--queue", "link|rank"],
                    ["pip", "install", "-e", ".[test]"], ["pipesim", "demo", "--out", "a b"],
                    ["pipesim", "grid", "--x", "--y"]]


@pytest.mark.parametrize("doc,cmd", pipesim_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_pipesim_command_verb_and_flags_exist(doc, cmd):
    assert len(cmd) > 1, f"{doc}: 'pipesim' without a verb"
    verb = [cmd[1]]
    rest = cmd[2:]
    if cmd[1] in SUB_VERBS:
        assert rest and not rest[0].startswith("-"), f"{doc}: 'pipesim {cmd[1]}' needs an action: {' '.join(cmd)}"
        verb.append(rest[0])
        rest = rest[1:]
    rc, text = help_text(*verb)
    assert rc == 0, f"{doc}: 'pipesim {' '.join(verb)}' is not a verb:\n{text}"
    for tok in rest:
        if tok.startswith("--"):
            flag = tok.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
                f"{doc}: 'pipesim {' '.join(verb)}' has no flag {flag} (in: {' '.join(cmd)})"


def _script_and_module_cases():
    cases = []
    for doc, cmd in all_commands():
        if re.fullmatch(r"python3?|bash|sh|torchrun", cmd[0]):
            cases.append((doc, cmd))
    return cases


@pytest.mark.parametrize("doc,cmd", _script_and_module_cases(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_scripts_and_modules_exist(doc, cmd):
    args = cmd[1:]
    if cmd[0] != "torchrun" and args and re.search(r"\.(py|sh)$", args[0]):
        assert (ROOT / args[0]).is_file(), f"{doc}: {args[0]} does not exist (in: {' '.join(cmd)})"
    if "-m" in args:
        module = args[args.index("-m") + 1]
        if module.split(".")[0] in PROJECT_PACKAGES:
            assert importlib.util.find_spec(module) is not None, f"{doc}: no module {module} (in: {' '.join(cmd)})"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # not inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # nor inside code spans
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def _link_cases():
    return [(_rel(doc), target) for doc in DOCS for target in _links(doc)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I)]  # http:, https:, mailto:


def test_the_docs_have_links():
    assert len(_link_cases()) > 10


@pytest.mark.parametrize("doc,target", _link_cases())
def test_relative_link_points_to_an_existing_file(doc, target):
    path_part, _, anchor = target.partition("#")
    base = (ROOT / doc).parent
    dest = (base / path_part).resolve() if path_part else ROOT / doc
    assert dest.exists(), f"{doc}: link {target} points to {dest}, which does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{doc}: link {target}: {dest.name} has no heading #{anchor}"
