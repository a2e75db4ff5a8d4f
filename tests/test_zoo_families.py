"""One model per timm family (``benchmarks/prune_zoo.py --timm-families``), see lightning_prune.bench.zoo_families.

The default suite checks the classification into pruned / refused / silent / crash /
skipped / timeout on small torchvision-free toy models (no timm needed). The ``slow``
suite runs the family sweep itself on three small timm families, through the script.
"""

from __future__ import annotations

import time

import pytest
import torch
from helpers import PRUNE_ZOO_SCRIPT
from torch import nn

from lightning_prune.bench import zoo_families as zf
from lightning_prune.engine import Group, PruningError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def toy(monkeypatch):
    """``zf._build`` returns ``factory()`` and a 16x16 image for any name."""

    def use(factory):
        monkeypatch.setattr(zf, "_build", lambda name, family: (factory().eval(), torch.randn(1, 3, 16, 16)))

    return use


def test_a_prunable_model_is_pruned(toy):
    toy(Net)
    r = zf.check_family_model("net", "toy", timeout_s=60)
    assert r.status == "pruned", r.note
    assert r.passed and r.counted and r.forward == "real" and r.input_size == (3, 16, 16)
    assert r.params_after < r.params_before and r.macs_after < r.macs_before
    assert 0 < r.pruned_groups <= r.groups and r.build_s > 0


@pytest.mark.parametrize("break_it", ["no longer runs", "new output shape"])
def test_a_model_broken_by_pruning_is_silent(monkeypatch, break_it):
    net = Net().eval()
    monkeypatch.setattr(zf, "_build", lambda name, family: (net, torch.randn(1, 3, 16, 16)))
    real_prune = zf.zoo.prune_by_ratio

    def prune_and_break(*args, **kwargs):  # what an engine bug the dry run misses would leave
        counts = real_prune(*args, **kwargs)
        net.fc = nn.Linear(3, 4) if break_it == "no longer runs" else nn.Linear(net.fc.in_features, 5)
        return counts

    monkeypatch.setattr(zf.zoo, "prune_by_ratio", prune_and_break)
    r = zf.check_family_model("net", "toy", timeout_s=60)
    assert r.status == "silent" and not r.passed and r.counted and r.pruned_groups > 0, r.note
    expected = "the pruned model does not run" if break_it == "no longer runs" else "output shapes changed"
    assert expected in r.note


def test_a_whole_model_refusal_is_refused_when_the_model_is_unchanged(toy, monkeypatch):
    toy(Net)

    def refuse(*args, **kwargs):
        raise PruningError("cannot prune this\nsecond line")

    monkeypatch.setattr(zf.DependencyGraph, "build_dependency", refuse)
    r = zf.check_family_model("net", "toy", timeout_s=60)
    assert r.status == "refused" and r.passed and r.pruned_groups == 0
    assert r.note == "graph: PruningError: cannot prune this"


def test_every_group_refused_is_refused(toy, monkeypatch):
    toy(Net)

    def refuse(self, idxs):
        raise PruningError("no")

    monkeypatch.setattr(Group, "prune", refuse)
    r = zf.check_family_model("net", "toy", timeout_s=60)
    assert r.status == "refused", r.note
    assert r.refused_groups == r.groups > 0 and "every group refused" in r.note


def test_an_unexpected_engine_error_is_a_crash(toy, monkeypatch):
    toy(Net)

    def boom(*args, **kwargs):
        raise KeyError("lost a node")

    monkeypatch.setattr(zf.zoo, "prune_by_ratio", boom)
    r = zf.check_family_model("net", "toy", timeout_s=60)
    assert r.status == "crash" and r.stage == "prune" and "KeyError" in r.note


def test_models_timm_cannot_build_or_run_are_skipped_and_not_counted(monkeypatch, toy):
    def cannot(name, family):
        raise ImportError("needs some_package")

    monkeypatch.setattr(zf, "_build", cannot)
    r = zf.check_family_model("net", "toy")
    assert r.status == "skipped" and not r.counted and "needs some_package" in r.error

    toy(lambda: nn.Sequential(nn.Conv2d(5, 4, 3)))  # 3-channel input: does not run unpruned
    r2 = zf.check_family_model("net", "toy")
    assert r2.status == "skipped" and "the unpruned model does not run" in r2.error

    t = zf.tally([r, r2])
    assert t["counted"] == 0 and t["skipped"] == 2 and t["pass_rate"] == 0.0


def test_a_slow_model_is_a_timeout(toy, monkeypatch):
    toy(Net)

    def slow(*args, **kwargs):
        time.sleep(5)

    monkeypatch.setattr(zf.zoo, "prune_by_ratio", slow)
    t0 = time.perf_counter()
    r = zf.check_family_model("net", "toy", timeout_s=0.5)
    assert r.status == "timeout" and r.counted and not r.passed
    assert time.perf_counter() - t0 < 4


def test_big_models_get_a_meta_forward(toy):
    toy(Net)
    r = zf.check_family_model("net", "toy", timeout_s=60, real_forward_gmacs=0)
    assert r.status == "pruned" and r.forward == "meta" and "meta-device forward" in r.note


def test_meta_forward_leaves_the_model_as_it_was():
    net = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    ref = net(x)
    assert zf._forward(net, x, "meta") == (1, 4)
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert torch.equal(net(x), ref)


def test_tally_and_table():
    results = [zf.FamilyResult("a", "a1", "pruned", (3, 8, 8), 2, 10, 5, 100, 50, 3, 2, 1, 0.01, 1.0),
               zf.FamilyResult("b", "b1", "refused", error="PruningError: x"),
               zf.FamilyResult("c", "c1", "crash", error="KeyError: y | z", stage="graph"),
               zf.FamilyResult("d", "d1", "skipped", error="ImportError: needs q")]
    assert zf.tally_line(results).startswith("pruned 1 / refused 1 / silent 0 / crash 1 (timeout 0, skipped 1);"
                                             " pass rate 66.7% (2/3)")
    env = {"date": "today", "versions": "torch x", "cpus": "2", "threads": "2", "load": "1.0"}
    text = zf.markdown_report(results, ratio=0.5, command="python benchmarks/prune_zoo.py --timm-families",
                              environment=env, timeout_s=300, real_forward_gmacs=8)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| " + " | ".join(zf.FAMILY_COLUMNS) + " |"
    assert rows[1].startswith("| a (2) | a1 | 3x8x8 | pruned | 0.00 |")
    assert "\\| z" in rows[3]  # pipes escaped
    assert "| skipped: ImportError: needs q |" in rows[4]


# --------------------------------------------------------------------------- timm (slow)


SMALL_FAMILIES = ["resnet", "vision_transformer", "mobilenetv3"]


@pytest.mark.slow
def test_family_sweep_on_small_timm_families(prune_zoo, tmp_path, capsys, monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.chdir(PRUNE_ZOO_SCRIPT.parents[1])
    out = tmp_path / "zoo_timm.md"
    argv = ["--timm-families", *SMALL_FAMILIES, "--no-torchvision", "--timeout", "300", "--markdown", str(out)]
    assert prune_zoo.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2].startswith("pruned 3 / refused 0 / silent 0 / crash 0 (timeout 0, skipped 0); "
                                  "pass rate 100.0% (3/3)"), printed[-2]

    text = out.read_text()
    assert f"Generated by `python benchmarks/prune_zoo.py {' '.join(argv)}` on " in text
    assert "timm " in text.split("|")[0]
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].strip("| ").split(" (")[0] for r in rows] == SMALL_FAMILIES
    for r in rows:
        assert r[1] == zf.TIMM_FAMILY_PICKS[r[0].strip("| ").split(" (")[0]] and r[3] == "pruned", r
        assert float(r[5]) < float(r[4]) and float(r[7]) < float(r[6])


@pytest.mark.slow
def test_pinned_picks_are_the_cheapest_of_their_family():
    timm = pytest.importorskip("timm")
    for family in ("visformer", "efficientformer", "inception_next"):
        if family in zf.timm_families() and zf.TIMM_FAMILY_PICKS[family] in timm.list_models(module=family):
            pick = zf.pick_family_model(family)
            assert pick.model == zf.TIMM_FAMILY_PICKS[family] and pick.how == "counted"
            assert pick.members == len(timm.list_models(module=family))
