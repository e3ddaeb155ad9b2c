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
    return json.loads(json.dumps(uniform_profile(2, nbytes=10).to_json()))


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("stages"), r"stages is missing"),
    (lambda d: d.update(pipesim_profile=9), r"pipesim_profile is 9"),
    (lambda d: d["stages"][1]["compute"]["1"].update(forward_s=-1), r'stages\[1\]\.compute\["1"\]\.forward_s must be a number > 0'),
    (lambda d: d["stages"][0]["compute"]["1"].pop("backward_s"), r'stages\[0\]\.compute\["1"\]\.backward_s is missing'),
    (lambda d: d["stages"][0]["compute"].update({"x": {}}), r'compute\["x"\] key must be a positive'),
    (lambda d: d["links"][0].update(bandwidth_bps=0), r"links\[0\]\.bandwidth_bps must be a number > 0"),
    (lambda d: d["links"][1].update(src=5), r"links\[1\]\.src must be a stage index"),
    (lambda d: d["links"].pop(), r"links has no link 1->0"),
    (lambda d: d.update(source="guess"), r"source must be 'measured' or 'estimated'"),
    (lambda d: d.update(host={"cores": 0, "slowdown": {}}), r"host\.cores must be a positive integer"),
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

    pr = uniform_profile(3, host=P.Host(2, {1: 1.0, 2: 1.04}, placement=(0, 1, 0)))
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
