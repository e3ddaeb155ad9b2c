import json

import pytest

from pipesim import profile as P
from tests.helpers import uniform_profile


def test_bundled_profile_loads_and_says_it_is_estimated():
    pr = P.load()
    assert pr.num_stages == 3
    assert pr.source == "estimated"
    assert "ESTIMATED" in pr.description
    assert pr.micro_batch_sizes[:3] == [1, 2, 4]


def test_round_trip(tmp_path):
    pr = uniform_profile(3, 0.5, 1.0, latency=1e-4, bandwidth=1e9, nbytes=1000, window=65536, opt=0.01,
                         host=P.Host(2, {1: 1.0, 2: 1.1, 3: 1.6}), mbs=(1, 2))
    path = tmp_path / "p.json"
    pr.save(path)
    back = P.load(path)
    assert back == pr
    with pytest.raises(FileExistsError, match="--force"):
        pr.save(path, force=False)


def doc():
    return json.loads(json.dumps(uniform_profile(2, nbytes=10, bandwidth=1e10).to_json()))


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("stages"), r"stages is missing"),
    (lambda d: d.update(pipesim_profile=9), r"pipesim_profile is 9"),
    (lambda d: d["stages"][1]["compute"]["1"].update(forward_s=-1), r'stages\[1\]\.compute\["1"\]\.forward_s must be a number > 0'),
    (lambda d: d["stages"][0]["compute"]["1"].pop("backward_s"), r'stages\[0\]\.compute\["1"\]\.backward_s is missing'),
    (lambda d: d["stages"][0]["compute"].update({"x": {}}), r'compute\["x"\] key must be a positive'),
    (lambda d: d["links"][0].update(bandwidth_bps=0), r"links\[0\]\.bandwidth_bps must be a number >= 1000 and <= 1e15 bit/s, got 0"),
    (lambda d: d["links"][1].update(src=5), r"links\[1\]\.src must be a stage index"),
    (lambda d: d["links"].pop(), r"links has no link 1->0"),
    (lambda d: d.update(source="guess"), r"source must be 'measured' or 'estimated'"),
    (lambda d: d.update(host={"cores": 0, "slowdown": {}}), r"host\.cores must be an integer >= 1 and <= 4096, got 0"),
    (lambda d: d["links"][0].update(latency_s="fast"), r"links\[0\]\.latency_s must be a number"),
])
def test_bad_fields_name_file_and_field(tmp_path, mutate, match):
    d = doc()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as e:
        P.load(path)
    assert str(path) in str(e.value)


def test_not_json_and_missing(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        P.load(path)
    with pytest.raises(ValueError, match="no such profile"):
        P.load(tmp_path / "missing.json")


def test_default_link_fills_missing_links():
    d = doc()
    d.pop("links")
    d["default_link"] = {"latency_s": 0.001, "bandwidth_bps": 1e9}
    pr = P.from_json(d)
    assert pr.link(1, 0).latency_s == 0.001


def test_placement_and_overhead_round_trip(tmp_path):
    from dataclasses import replace

    pr = uniform_profile(3, bandwidth=1e10, host=P.Host(2, {1: 1.0, 2: 1.04}, placement=(0, 1, 0)))
    st = tuple(replace(s, compute={m: replace(c, overhead_s=3e-4, overhead_by_schedule_s={"gpipe": 3e-4, "1f1b": 2e-4})
                                   for m, c in s.compute.items()}) for s in pr.stages)
    pr = replace(pr, stages=st)
    pr.save(tmp_path / "p.json")
    back = P.load(tmp_path / "p.json")
    assert back == pr and back.stages[0].compute[1].overhead("1f1b") == 2e-4
    d = json.loads((tmp_path / "p.json").read_text())
    bad = json.loads(json.dumps(d))
    bad["stages"][1]["compute"]["1"]["overhead_by_schedule_s"] = {"zb": 1e-4}
    (tmp_path / "bad_sched.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"stages\[1\].*overhead_by_schedule_s unknown schedule 'zb'"):
        P.load(tmp_path / "bad_sched.json")
    d["host"]["placement"] = [0, 5, 0]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"host\.placement must list one core index"):
        P.load(tmp_path / "bad.json")


# ---------------------------------------------------------------------- one schema, one serializer

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
PROFILES = sorted(ROOT.glob("pipesim/data/gpt3_*.json")) + sorted(ROOT.glob("benchmarks/results/gpu-*/gpt3_*.json"))


def test_schema_file_is_the_generated_schema():
    import jsonschema

    from pipesim import schema

    assert schema.SCHEMA_FILE.read_text() == schema.schema_text(), "run: python -m pipesim.schema --write"
    doc = json.loads(schema.SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    # any tool that reads the file accepts the shipped profiles
    for path in PROFILES:
        assert not list(jsonschema.Draft202012Validator(doc).iter_errors(json.loads(path.read_text()))), path


# every profile committed to the repository (calibrated by older versions, kept with their results)
COMMITTED = sorted(p for d in ("pipesim/data", "benchmarks") for p in (ROOT / d).rglob("*.json")
                   if p.name != "profile.schema.json" and '"pipesim_profile"' in p.read_text(errors="replace"))


def test_every_committed_profile_still_loads():
    assert len(COMMITTED) >= 13, COMMITTED   # the bundled two, the H200 one, the validation runs' profiles
    for path in COMMITTED:
        P.load(path)   # every top-level field an older pipesim wrote is still known


def test_schema_key_is_accepted_and_ignored():
    d = doc()
    d["$schema"] = "pipesim/data/profile.schema.json"
    assert P.from_json(d) == P.from_json(doc())
    d["$schema"] = 1
    with pytest.raises(ValueError, match=r"must be a string, got 1$"):
        P.from_json(d, "s.json")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_round_trip(path):
    pr = P.load(path)
    assert P.from_json(pr.to_json()) == pr
    assert P.from_json(json.loads(json.dumps(pr.to_json()))) == pr
    # no transport section (written before it existed, or left to the backend's default): None
    assert (pr.transport is None) == ("transport" not in json.loads(path.read_text()))


def calibrated_style():
    """A profile as calibration writes one: host with placement, windows, per-schedule overheads, transport, raw."""
    from dataclasses import replace

    from pipesim.transport import Transport

    pr = uniform_profile(3, 0.01, 0.02, latency=5e-5, bandwidth=1e10, nbytes=4096, window=65536, opt=0.003,
                         host=P.Host(2, {1: 1.0, 2: 1.07, 3: 1.5}, quantum_s=float("inf"), placement=(0, 1, 0)),
                         mbs=(1, 2, 4))
    st = tuple(replace(s, layers=2, compute={m: replace(c, forward_spread_s=1e-4, overhead_s=3e-4,
                                                        overhead_by_schedule_s={"gpipe": 3e-4, "1f1b": 2e-4})
                                             for m, c in s.compute.items()}) for s in pr.stages)
    return replace(pr, stages=st, source="measured", description="calibrated-style",
                   model={"name": "tiny", "layers": 6, "d_model": 64, "partition": [[0, 2], [2, 4], [4, 6]]},
                   device={"name": "cpu", "backend": "gloo", "type": "cpu"},
                   transport=Transport.for_backend("gloo"),
                   raw={"settings": {"repeats": 5}, "links": [], "nan_is_kept": float("nan")})


def test_calibrated_style_profile_round_trips(tmp_path):
    pr = calibrated_style()
    pr.save(tmp_path / "p.json")
    back = P.load(tmp_path / "p.json")
    assert back.raw is not None and back.raw.pop("nan_is_kept") != back.raw.get("nan_is_kept")   # NaN stays NaN in raw
    pr.raw.pop("nan_is_kept")
    assert back == pr
    assert P.from_json(pr.to_json()) == pr
    assert json.loads((tmp_path / "p.json").read_text())["transport"] == {
        "queue": "link", "send_mode": "rendezvous", "eager_limit_bytes": 0, "recv_ahead": None}


def test_transport_section_is_read_and_checked():
    from pipesim.transport import Transport

    d = doc()
    d["transport"] = {"queue": "rank", "send_mode": "rendezvous", "recv_ahead": None}
    pr = P.from_json(d)
    assert pr.transport == Transport(queue="rank", send_mode="rendezvous", eager_limit_bytes=0, recv_ahead=None)
    assert Transport.for_profile(pr) == pr.transport
    d["transport"] = None
    assert Transport.for_profile(P.from_json(d)) == Transport.for_backend("gloo")


def _edit(path, old, new):
    text = json.dumps(doc(), indent=1)
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


BAD_TEXT = [  # (old text in the document, new text, the message)
    ('"forward_s": 1.0', '"forward_s": 1' + "0" * 400,
     r'stages\[0\]\.compute\["1"\]\.forward_s must be a number > 0 and <= 86400 s, got a number of 401 digits$'),
    ('"activation_bytes": 10', '"activation_bytes": 1' + "0" * 400,
     r'stages\[0\]\.compute\["1"\]\.activation_bytes must be an integer >= 0 .* got a number of 401 digits$'),
    ('"activation_bytes": 10', '"activation_bytes": 1' + "0" * 5000, r"activation_bytes .* got a number of 5001 digits$"),
    ('"forward_s": 1.0', '"forward_s": NaN', r'compute\["1"\]\.forward_s must be a number > 0 .*, got NaN$'),
    ('"forward_s": 1.0', '"forward_s": Infinity', r"forward_s must be a number > 0 .*, got Infinity$"),
    ('"backward_s": 2.0', '"backward_s": -Infinity', r"backward_s must be a number > 0 .*, got -Infinity$"),
    ('"forward_s": 1.0', '"forward_s": 1e400', r"forward_s must be a number > 0 .*, got 1e400$"),
    ('"window_bytes": null', '"window_bytes": 1e-300',
     r"links\[0\]\.window_bytes must be an integer >= 1 and <= 1,099,511,627,776 bytes, or null, got 1e-300$"),
    ('"window_bytes": null', '"window_bytes": null, "delay_excess_s": -1e-4',
     r"links\[0\]\.delay_excess_s must be a number >= 0 and <= 3600 s, got -0.0001$"),
    ('"activation_bytes": 10', '"activation_bytes": 10.5', r"activation_bytes must be an integer >= 0 .*, got 10.5$"),
    ('"layers": null', '"layers": -1', r"stages\[0\]\.layers must be an integer >= 1 and <= 1e6, or null, got -1$"),
    ('"layers": null', '"layers": 0', r"stages\[0\]\.layers must be an integer .*, got 0$"),
    ('"layers": null', '"layers": NaN', r"stages\[0\]\.layers must be an integer .*, got NaN$"),
    ('"layers": null', '"layers": true', r"stages\[0\]\.layers must be an integer .*, got True$"),
    ('"layers": null', '"layers": "4"', r"stages\[0\]\.layers must be an integer .*, got '4'$"),
    ('"layers": null', '"layers": 2.5', r"stages\[0\]\.layers must be an integer .*, got 2.5$"),
    ('"model": {}', '"model": "gpt"', r"model must be an object, or null, got 'gpt'$"),
    ('"model": {}', '"model": [1]', r"model must be an object, or null, got a list$"),
    ('"model": {}', '"model": {"layers": 0}', r"model\.layers must be an integer >= 1 and <= 1e6, got 0$"),
    ('"model": {}', '"model": {"layers": "twelve"}', r"model\.layers must be an integer .*, got 'twelve'$"),
    ('"model": {}', '"model": {"name": 5}', r"model\.name must be a string, got 5$"),
    ('"model": {}', '"model": {"d_model": -768}', r"model\.d_model must be an integer >= 1 .*, got -768$"),
    ('"backend": "gloo"', '"backend": 3', r"device\.backend must be a string, got 3$"),
    ('"optimizer_s": 0.0', '"optimiser_s": 0.0', r"stages\[0\] has unknown field 'optimiser_s' \(known: layers, optimizer_s, compute, virtual_stages\)$"),
    ('"forward_s": 1.0', '"forwards_s": 1.0', r'stages\[0\]\.compute\["1"\]\.forward_s is missing$'),
    ('"latency_s": 0.0', '"latency_s": 0.0, "lag_s": 1', r"links\[0\] has unknown field 'lag_s'"),
    ('"source": "estimated"', '"source": 1', r"source must be 'measured' or 'estimated', got 1$"),
    ('"description": ""', '"description": ["x"]', r"description must be a string, got a list$"),
    ('"stages": [', '"stages": [], "raw": [', r"stages must be a non-empty list$"),
    # a misspelt top-level field is named (not "stages is missing"), with the fields allowed
    ('"stages": [', '"stagse": [', r"unknown top-level field 'stagse' \(known: \$schema, pipesim_profile, source, "
                                   r"description, model, device, stages, links, default_link, host, transport, raw\)$"),
    ('"links": [', '"link": [', r"unknown top-level field 'link' \(known: .*\)$"),
    ('"source": "estimated"', '"source": "estimated", "hots": null', r"unknown top-level field 'hots' \(known: "),
    ('"dst": 1', '"dst": 2', r"links\[0\]\.dst must be a stage index 0\.\.1, got 2$"),
    ('"dst": 1', '"dst": 0', r"links\[0\] joins stage 0 to itself$"),
    ('"src": 1,\n   "dst": 0', '"src": 0, "dst": 1', r"links\[1\] repeats link 0->1$"),
    ('"src": 1', '"src": -1', r"links\[1\]\.src must be an integer >= 0, got -1$"),
    ('"pipesim_profile": 1', '"pipesim_profile": true', r"pipesim_profile is True; this pipesim reads version 1$"),
]


@pytest.mark.parametrize("old,new,match", BAD_TEXT, ids=[m[:40] for _, _, m in BAD_TEXT])
def test_bad_text_names_file_and_field_in_one_line(tmp_path, old, new, match):
    path = tmp_path / "bad.json"
    _edit(path, old, new)
    with pytest.raises(ValueError, match=match) as e:
        P.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 300, msg


@pytest.mark.parametrize("section,match", [
    ({"queue": "bus", "send_mode": "eager", "recv_ahead": None}, r"transport\.queue must be 'link' or 'rank', got 'bus'$"),
    ({"queue": "rank", "send_mode": "rendezvous"}, r"transport\.recv_ahead is missing$"),
    ({"queue": "rank", "send_mode": "rendezvous", "recv_ahead": -1},
     r"transport\.recv_ahead must be an integer >= 0 and <= 2,147,483,648 computations, or null, got -1$"),
    ({"queue": "rank", "send_mode": "eager", "recv_ahead": 0, "eager_limit_bytes": 0.5},
     r"transport\.eager_limit_bytes must be an integer >= 0"),
    ({"queue": "rank", "send_mode": "eager", "recv_ahead": 0, "post": 1}, r"transport has unknown field 'post'"),
    ("rank", r"transport must be an object, or null, got 'rank'$"),
])
def test_bad_transport_sections(section, match):
    d = doc()
    d["transport"] = section
    with pytest.raises(ValueError, match=match):
        P.from_json(d, "t.json")


@pytest.mark.parametrize("host,match", [
    ({"cores": 2, "slowdown": {}}, r"host\.slowdown must not be empty"),
    ({"cores": 2, "slowdown": {"0": 1.0}}, r'host\.slowdown\["0"\] key must be a positive number of ranks$'),
    ({"cores": 2, "slowdown": {"1": 0}}, r'host\.slowdown\["1"\] must be a number >= 0\.001 and <= 1000, got 0$'),
    ({"cores": 2, "slowdown": {"1": 1.0}, "quantum_s": "fast"}, r"host\.quantum_s must be a number > 0 .*'inf', or null, got 'fast'$"),
    ({"cores": 2.5, "slowdown": {"1": 1.0}}, r"host\.cores must be an integer >= 1 and <= 4096, got 2\.5$"),
    ({"cores": 2, "slowdown": {"1": 1.0}, "placement": [0, 2]}, r"host\.placement must list one core index 0\.\.1 per stage"),
    ({"cores": 2, "slowdown": {"1": 1.0}, "placement": [0]}, r"host\.placement must list one core index"),
])
def test_bad_host_sections(host, match):
    d = doc()
    d["host"] = host
    with pytest.raises(ValueError, match=match):
        P.from_json(d, "h.json")


def test_host_quantum_inf_is_accepted():
    d = doc()
    d["host"] = {"cores": 2, "slowdown": {"1": 1.0}, "quantum_s": "inf"}
    assert P.from_json(d).host.quantum_s == float("inf")


def test_python_values_json_cannot_hold_are_refused_by_field():
    for bad, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (10 ** 400, "a number of 401 digits"), (True, "True")):
        d = doc()
        d["stages"][1]["compute"]["1"]["forward_s"] = bad
        with pytest.raises(ValueError, match=rf'^x: stages\[1\]\.compute\["1"\]\.forward_s must be a number > 0 .*, got {shown}$'):
            P.from_json(d, "x")


def test_files_that_are_not_profiles(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=rf"^{tmp_path}: is a folder; name a profile file"):
        P.load(tmp_path)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(json.dumps(doc()).replace('""', '"caf\u00e9"', 1).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.json: not a profile: byte 0xe9 at offset \d+ is not UTF-8"):
        P.load(bad)
    deep = tmp_path / "deep.json"
    d = json.dumps(doc())
    deep.write_text(d[:-1] + ', "raw": ' + "[" * 2000 + "]" * 2000 + "}")
    with pytest.raises(ValueError, match=r"deep\.json: not a profile: nested too deeply") as e:
        P.load(deep)
    assert "\n" not in str(e.value)
    for name, text, match in (("empty.json", "", "not valid JSON"), ("list.json", "[1]", "document must be a JSON object"),
                              ("old.json", '{"stages": []}', "pipesim_profile is missing")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=rf"{name}: {match}"):
            P.load(tmp_path / name)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(doc()))
    import os

    if os.geteuid() != 0:
        ok.chmod(0)
    else:   # root reads anything: make the read fail as it would for another user
        def refuse(self):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(type(ok), "read_bytes", refuse)
    with pytest.raises(ValueError, match=r"ok\.json: cannot read the profile: permission denied$"):
        P.load(ok)


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc()).encode())
    assert P.load(path).num_stages == 2


def test_docs_field_table_is_the_generated_one():
    from pipesim import schema

    text = (ROOT / "docs/profile.md").read_text()
    table = text.split("<!-- fields: generated by python -m pipesim.schema --markdown -->\n", 1)[1].split(
        "\n<!-- end fields -->", 1)[0]
    assert table == schema.markdown(), "regenerate the table: python -m pipesim.schema --markdown"
