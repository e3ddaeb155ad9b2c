"""The one declared shape of a profile: a JSON Schema (Draft 2020-12) built from :mod:`pipesim.limits`.

:func:`profile_schema` builds it; :func:`first_error` validates a document against it
(with the ``jsonschema`` library) and turns the first problem into a one-line message
that names the field, e.g. ``stages[1].compute["4"].forward_s must be a number > 0 and
<= 86400 s, got -1``. The profile reader (:func:`pipesim.profile.from_json`) calls it,
then checks what a schema cannot say (links name existing stages, neighbours are
linked, ``host.placement`` has one core per stage).

The schema also ships as ``pipesim/data/profile.schema.json`` (``python -m
pipesim.schema --write`` writes it, without ``--write`` it is printed; a test checks
that the file matches), so that a hand-written
profile can be checked with any JSON Schema tool; ``python -m pipesim.schema
--markdown`` prints the table of fields in ``docs/profile.md``.

Numbers: a non-finite number (``NaN``, ``Infinity``, ``1e400``) is not a number here,
so it is refused wherever a number is expected; integers are whole numbers (``4`` or
``4.0``, never ``4.5`` or ``true``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import limits as L
from .schedule import GENERATORS
from .transport import QUEUES, SEND_MODES

VERSION = 1
SCHEMA_FILE = Path(__file__).parent / "data" / "profile.schema.json"
POSITIVE_KEY = "^[1-9][0-9]*$"
UNIT = "; unit: "

# leaf schema (canonical JSON) -> the Range it states, so that messages give its unit
_RANGES: dict[str, L.Range] = {}


def _key(leaf: dict) -> str:
    return json.dumps(leaf, sort_keys=True)


def _num(r: L.Range, *, null: bool = False, also: Iterable[str] = (), doc: str | None = None) -> dict[str, Any]:
    """The leaf schema of a quantity in range ``r`` (optionally null, or one of the strings ``also``)."""
    types: list[str] = ["integer" if r.integer else "number"]
    leaf: dict[str, Any] = {}
    also = list(also)
    if also:
        types.append("string")
    if null:
        types.append("null")
    leaf["type"] = types[0] if len(types) == 1 else types
    lo: int | float = int(r.lo) if r.integer else r.lo
    hi: int | float = int(r.hi) if r.integer else r.hi
    leaf["exclusiveMinimum" if r.lo_open else "minimum"] = lo
    leaf["maximum"] = hi
    if also:  # a string must be one of these
        leaf["pattern"] = "^(" + "|".join(re.escape(a) for a in also) + ")$"
    leaf["description"] = f"{doc or r.doc}{UNIT}{r.unit}" if r.unit else (doc or r.doc)
    _RANGES[_key(leaf)] = r
    return leaf


def _obj(props: dict[str, Any], required: Iterable[str] = (), *, closed: bool = True, null: bool = False,
         description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": ["object", "null"] if null else "object"}
    if description:
        out["description"] = description
    if required:
        out["required"] = list(required)
    out["properties"] = props
    if closed:
        out["additionalProperties"] = False
    return out


def _keyed(values: dict[str, Any], what: str, description: str) -> dict[str, Any]:
    """An object keyed by positive integers given as strings ("1", "2", ...)."""
    return {"type": "object", "description": description, "minProperties": 1,
            "propertyNames": {"pattern": POSITIVE_KEY, "description": what},
            "patternProperties": {POSITIVE_KEY: values}}


@lru_cache(maxsize=1)
def _schema_json() -> str:
    schedules = list(GENERATORS)
    compute = _obj({
        "forward_s": _num(L.SECONDS, doc="median time of one forward of one micro-batch"),
        "backward_s": _num(L.SECONDS, doc="median time of one backward of one micro-batch"),
        "activation_bytes": _num(L.BYTES, null=True, doc="bytes sent to the next stage per micro-batch (null: 0)"),
        "gradient_bytes": _num(L.BYTES, null=True, doc="bytes sent back to the previous stage per micro-batch (null: 0)"),
        "forward_spread_s": _num(L.SECONDS_OR_ZERO, null=True, doc="spread (interquartile range) of the forward times"),
        "backward_spread_s": _num(L.SECONDS_OR_ZERO, null=True, doc="spread (interquartile range) of the backward times"),
        "overhead_s": _num(L.SECONDS_OR_ZERO, null=True,
                           doc="the runtime's own CPU time per computation of the schedule (each forward and "
                               "backward, and each weight-gradient W of a split-backward schedule such as zbh1), "
                               "added to each by the simulator"),
        "step_overhead_s": _num(L.SECONDS_OR_ZERO, null=True,
                                doc="the runtime's own CPU time per step on this stage's rank beyond its computations "
                                    "and optimizer step (zero_grad, bookkeeping), added to the rank's optimizer step by "
                                    "the simulator (null or left out: 0)"),
        "overhead_by_schedule_s": {
            "type": ["object", "null"],
            "description": "overhead_s probed per schedule, used for that schedule when present",
            "propertyNames": {"enum": schedules, "description": "schedule"},
            "additionalProperties": _num(L.SECONDS_OR_ZERO, doc="the runtime's CPU time per computation under this schedule"),
        },
        "backward_input_s": _num(L.SECONDS, null=True,
                                 doc="split backward (zbh1): the input-gradient part B of backward_s (null or left "
                                     "out: backward_s minus backward_weight_s if given, else half of backward_s)"),
        "backward_weight_s": _num(L.SECONDS, null=True,
                                  doc="split backward (zbh1): the weight-gradient part W of backward_s (null or left "
                                      "out: backward_s minus backward_input_s if given, else half of backward_s)"),
    }, ["forward_s", "backward_s"], description="one stage at one micro-batch size")
    stage = _obj({
        "layers": _num(L.LAYERS, null=True, doc="model layers in this stage"),
        "optimizer_s": _num(L.SECONDS_OR_ZERO, null=True, doc="optimizer step of this stage (null: 0)"),
        "compute": _keyed({"$ref": "#/$defs/compute"}, "a positive micro-batch size",
                          "per micro-batch size (a key like \"4\"): times and message sizes"),
        "virtual_stages": {"type": ["array", "null"], "minItems": 1,
                           "description": "interleaved schedules: the compute of each virtual stage this rank runs, "
                                          "in stage order (null or left out: compute split evenly over them)",
                           "items": _keyed({"$ref": "#/$defs/compute"}, "a positive micro-batch size",
                                           "one virtual stage, per micro-batch size")},
    }, ["compute"], description="one pipeline stage (one rank)")
    link_props = {
        "latency_s": _num(L.LATENCY_S), "bandwidth_bps": _num(L.LINK_BANDWIDTH_BPS),
        "window_bytes": _num(L.WINDOW_BYTES, null=True), "delay_excess_s": _num(L.DELAY_EXCESS_S),
    }
    index = {"type": "integer", "minimum": 0, "description": "stage index, 0 for the first stage"}
    link = _obj({"src": {**index, "description": "sending stage"}, "dst": {**index, "description": "receiving stage"},
                 **link_props}, ["src", "dst", "latency_s", "bandwidth_bps"], description="one direction of a link")
    default_link = _obj(dict(link_props), ["latency_s", "bandwidth_bps"],
                        description="used for every neighbour link missing from 'links'")
    host = _obj({
        "cores": _num(L.CORES),
        "slowdown": _keyed(_num(L.SLOWDOWN), "a positive number of ranks",
                           "k ranks computing at once (a key like \"2\") -> each runs this many times slower than alone"),
        "quantum_s": _num(L.QUANTUM_S, null=True, also=["inf"],
                          doc="round-robin time slice of the host scheduler (\"inf\": run to completion; null: fluid sharing)"),
        "placement": {"type": ["array", "null"], "description": "the core each rank is pinned to, one per stage",
                      "items": {"type": "integer", "minimum": 0, "description": "core index"}},
        "shaped_cpu": {"type": ["array", "null"],
                       "description": "CPU a rank spends per byte it sends or receives through a rate cap without a "
                                      "delay, probed per rate (calibrate.shaped); the simulator charges it on the "
                                      "sender's and the receiver's core, interpolated in log rate between the probed "
                                      "rates (null or left out: nothing)",
                       "items": _obj({"bandwidth_bps": _num(L.BANDWIDTH_BPS, doc="the probed rate cap"),
                                      "s_per_byte": _num(L.SHAPED_CPU_S_PER_BYTE)},
                                     ["bandwidth_bps", "s_per_byte"])},
    }, ["cores", "slowdown"], null=True, description="all ranks share one machine (the local testbed); "
                                                     "a cluster with one rank per machine leaves it out")
    transport = _obj({
        "queue": {"enum": list(QUEUES), "description": "link: one FIFO per link direction (one connection per pair "
                                                       "of ranks); rank: one send and one receive queue per rank, "
                                                       "shared by forward and backward traffic"},
        "send_mode": {"enum": list(SEND_MODES), "description": "eager: a send starts when posted; rendezvous: once "
                                                               "the receiver has posted the receive and told the sender"},
        "eager_limit_bytes": _num(L.BYTES, doc="messages up to this size go eagerly under rendezvous (default 0)"),
        "recv_ahead": _num(L.RECV_AHEAD, null=True),
    }, ["queue", "send_mode", "recv_ahead"], null=True,
        description="how the runtime this profile was calibrated from moves messages; "
                    "left out: the runtime's default for device.backend")
    name = {"type": "string"}
    model = _obj({
        "name": {**name, "description": "model name or preset"},
        "layers": _num(L.LAYERS, doc="layers of the model"),
        **{k: _num(L.MODEL_SIZE, doc=doc) for k, doc in (
            ("d_model", "hidden size"), ("heads", "attention heads"), ("seq_len", "sequence length"),
            ("vocab", "vocabulary size"), ("stages", "stages the model was split into"))},
        "partition": {"type": "array", "description": "[first layer, end layer) of each stage",
                      "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                "items": {"type": "integer", "minimum": 0, "description": "layer index"}}},
    }, closed=False, null=True, description="what was measured (free-form; these fields are checked when present)")
    device = _obj({
        "name": {**name, "description": "device name"},
        "backend": {**name, "description": "communication backend (gloo, nccl): sets the default transport"},
        "dtype": {**name, "description": "compute data type"},
        "type": {**name, "description": "cpu or cuda"},
    }, closed=False, null=True, description="where it was measured (free-form; these fields are checked when present)")
    doc: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:pipesim:profile:1",
        "title": "pipesim profile, version 1",
        "description": "What calibration measured (or a person estimated) and what the simulator reads. "
                       "Generated from pipesim/limits.py by python -m pipesim.schema; see docs/profile.md.",
        "type": "object",
        # an unknown top-level field is an error; listed before "required" because jsonschema
        # checks keywords in this order, so a misspelt "stagse" is named rather than "stages is missing"
        "additionalProperties": False,
        "required": ["pipesim_profile", "stages"],
        "properties": {
            "$schema": {"type": "string", "description": "the JSON Schema this file follows (for editors and "
                                                         "schema tools; pipesim ignores it)"},
            "pipesim_profile": {"const": VERSION, "description": "format version"},
            "source": {"enum": ["measured", "estimated"], "description": "never present one as the other"},
            "description": {"type": "string", "description": "where the numbers come from"},
            "model": model,
            "device": device,
            "stages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/stage"},
                       "description": "the pipeline stages in order, one rank each"},
            "links": {"type": "array", "items": {"$ref": "#/$defs/link"},
                      "description": "each direction between neighbour stages (or a default_link)"},
            "default_link": {"$ref": "#/$defs/default_link"},
            "host": {"$ref": "#/$defs/host"},
            "transport": {"$ref": "#/$defs/transport"},
            "raw": {"description": "free-form: the raw measurements behind the numbers"},
        },
        "$defs": {"stage": stage, "compute": compute, "link": link, "default_link": default_link, "host": host,
                  "transport": transport},
    }
    return json.dumps(doc, indent=2)


def profile_schema() -> dict[str, Any]:
    """The profile's JSON Schema (a fresh copy)."""
    return json.loads(_schema_json())


def schema_text() -> str:
    """The schema as written to ``pipesim/data/profile.schema.json``."""
    return _schema_json() + "\n"


# ---------------------------------------------------------------------- validation


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator, validators

    def finite_number(_checker, x) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return False
        return isinstance(x, int) or math.isfinite(x)

    def whole(_checker, x) -> bool:
        return finite_number(_checker, x) and (isinstance(x, int) or float(x).is_integer())

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({"number": finite_number, "integer": whole})
    cls = validators.extend(Draft202012Validator, type_checker=checker)
    schema = profile_schema()
    cls.check_schema(schema)
    return cls(schema)


def first_error(doc: Any) -> str | None:
    """The first problem of ``doc`` against the schema as a one-line message naming the field, or None."""
    err = next(iter(_validator().iter_errors(doc)), None)
    return None if err is None else message(err)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "a string", "number": "a number",
               "integer": "an integer", "boolean": "true or false", "null": "null"}


# objects keyed by data (micro-batch sizes, rank counts, schedules): their keys are shown as ["key"]
_MAPS = ("compute", "slowdown", "overhead_by_schedule_s")


def field_path(parts: Iterable[Any]) -> str:
    """``["stages", 1, "compute", "4", "forward_s"]`` -> ``stages[1].compute["4"].forward_s``."""
    out = ""
    prev: Any = None
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _IDENT.match(p) and prev not in _MAPS:
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p)}]"
        prev = p
    return out


def shown(v: Any) -> str:
    """A value for an error message: one line, short (a 400-digit number is described, not printed)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 30:
        return f"a number of {len(str(abs(v)))} digits"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "null"
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(schema: dict) -> str:
    """What a leaf accepts, in words: its Range's (with the unit) or built from its keywords."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    r = _RANGES.get(_key(schema))
    if r is not None:
        text = r.describe()
    elif "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    elif "const" in schema:
        return repr(schema["const"])
    else:
        main = [t for t in types if t != "null"]
        text = " or ".join(_TYPE_WORDS.get(t, t) for t in main) or "anything"
        if main == ["array"] and schema.get("minItems") is not None and schema.get("minItems") == schema.get("maxItems"):
            text += f" of {schema['minItems']}"
        bounds = [f"{op} {schema[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                                    ("maximum", "<=")) if k in schema]
        if bounds:
            text += " " + " and ".join(bounds)
    if "pattern" in schema and "string" in types:
        text += ", " + " or ".join(repr(s) for s in schema["pattern"].strip("^$()").split("|"))
    if "null" in types:
        text += ", or null"
    return text


def message(err) -> str:
    """One ``jsonschema`` error as ``<field> <problem>``."""
    path = field_path(err.absolute_path)
    v, s, kind = err.instance, err.schema, err.validator
    where = path or "document"
    if "propertyNames" in err.relative_schema_path:   # a bad key: the error is about the key itself
        names = s.get("description", "key")
        if kind == "enum":
            return f"{where} unknown {names} {v!r} ({', '.join(map(str, err.validator_value))})"
        return f"{field_path([*err.absolute_path, str(v)])} key must be {names}"
    if kind == "required":
        missing = [k for k in err.validator_value if k not in v]
        return f"{field_path([*err.absolute_path, missing[0]])} is missing"
    if kind == "additionalProperties":
        known = list(s.get("properties", {}))
        extra = [k for k in v if k not in known]
        return (f"{where + ' has unknown field' if path else 'unknown top-level field'} {shown(extra[0])}"
                + (f" (known: {', '.join(known)})" if known else ""))
    if kind == "minItems" and err.validator_value == 1:
        return f"{where} must be a non-empty list"
    if kind == "minProperties" and err.validator_value == 1:
        keyed = s.get("propertyNames", {}).get("description")
        return f"{where} must not be empty" + (f": give at least one entry keyed by {keyed}" if keyed else "")
    if kind in ("minItems", "maxItems"):
        n = err.validator_value
        return f"{where} must have {'at least' if kind == 'minItems' else 'at most'} {n} item(s), got {len(v)}"
    if kind == "enum":
        return f"{where} must be {' or '.join(repr(x) for x in err.validator_value)}, got {shown(v)}"
    if kind in ("type", "minimum", "exclusiveMinimum", "maximum", "pattern", "const"):
        return f"{where} must be {_describe(s)}, got {shown(v)}"
    return f"{where}: {err.message[:200]}"


# ---------------------------------------------------------------------- the table of docs/profile.md


def markdown() -> str:
    """Every field of a profile: where, required or not, what it accepts (unit and range), what it means."""
    schema = profile_schema()
    defs = schema["$defs"]
    lines = ["| field | required | accepts | meaning |", "|---|---|---|---|"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def walk(node: dict, path: str, required: bool | None) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        types = node.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        if path:
            need = "-" if required is None else "yes" if required else "no"
            meaning = node.get("description", "").split(UNIT)[0]
            lines.append(f"| `{path}` | {need} | {cell(_describe(node))} | {cell(meaning)} |")
        for k, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{k}" if path else k, k in node.get("required", []))
        for sub in node.get("patternProperties", {}).values():
            walk(sub, f'{path}["<n>"]', False)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f'{path}["<{node["propertyNames"]["description"]}>"]', False)
        if "items" in node and "array" in types:
            walk(node["items"], f"{path}[]", None)

    walk(schema, "", True)
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown())
    elif sys.argv[1:] == ["--write"]:
        SCHEMA_FILE.write_text(schema_text())
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(schema_text())
