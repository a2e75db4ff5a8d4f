"""Random architectures must never break silently when pruned.

Each seed is a small random model (random_architectures.py), pruned group by group, again
on the same graph, and by MetaPruner (arch_probe.py). A model passes when it was pruned
and still runs forward and backward with the dense output shapes, or when the engine
refused clearly and left it unchanged. ``benchmarks/random_architectures.py`` runs the
same probe over any seed range and prints every failure.
"""

from __future__ import annotations

import collections
import logging
import warnings

import pytest
import torch
from arch_probe import probe, tally, tally_line
from random_architectures import COMPONENTS, CORE, make_model, tensors_in

# Seed s is drawn until it uses FOCUS[s % len(FOCUS)], the core components a plain draw
# uses least coming first, so these 30 seeds use every core component (test below) and the
# slow budget every component. A model takes 0.2-0.6 s on one thread (most of it in
# build_dependency); the first probe of a process adds a few seconds of torch warm-up.
FAST_SEEDS = range(30)
SLOW_SEEDS = range(1000, 1160)


def _run(seeds) -> tuple[list, collections.Counter]:
    outcomes, failures = [], []
    used = collections.Counter()
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for seed in seeds:
                model, inputs, desc = make_model(seed)
                used.update(desc.components)
                res = probe(model, inputs, seed=seed)
                outcomes.append(res)
                if not res.passed:
                    failures.append(f"seed {seed} {res.outcome} [{res.stage}] {res.first_line()[:200]}\n"
                                    f"    {desc.summary[:200]}")
    finally:
        logging.disable(logging.NOTSET)
    print(tally_line(outcomes))
    for f in failures:
        print(f)
    counts = tally(outcomes)
    assert counts["silent"] == 0 and counts["crash"] == 0, (
        tally_line(outcomes) + "\n" + "\n".join(failures))
    return outcomes, used


def test_random_architectures_never_break_silently():
    outcomes, _ = _run(FAST_SEEDS)
    assert sum(o.outcome == "pruned" for o in outcomes) >= len(outcomes) // 2, "most models should prune"


@pytest.mark.slow
def test_random_architectures_never_break_silently_many_seeds():
    _, used = _run(SLOW_SEEDS)
    missing = [c for c in COMPONENTS if not used[c]]
    assert not missing, f"the slow seed budget never uses {missing}"


def test_generator_covers_every_core_component():
    used = collections.Counter()
    for seed in FAST_SEEDS:
        used.update(make_model(seed)[2].components)
    missing = [c for c in CORE if not used[c]]
    assert not missing, f"the fast seed budget never uses {missing}"
    print(f"fast budget: {sum(1 for c in COMPONENTS if used[c])}/{len(COMPONENTS)} components, all "
          f"{len(CORE)} core ones")


@pytest.mark.slow
def test_generator_covers_every_component():
    used = collections.Counter()
    for seed in SLOW_SEEDS:
        used.update(make_model(seed)[2].components)
    missing = [c for c in COMPONENTS if not used[c]]
    assert not missing, f"the slow seed budget never uses {missing}"


def test_generator_is_deterministic_and_runs():
    for seed in (0, 7, 23):
        m1, x1, d1 = make_model(seed)
        m2, x2, d2 = make_model(seed)
        assert d1.summary == d2.summary and d1.components == d2.components
        s1, s2 = m1.state_dict(), m2.state_dict()
        assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
        flat1, flat2 = tensors_in(x1), tensors_in(x2)
        assert flat1 and len(flat1) == len(flat2) and all(torch.equal(a, b) for a, b in zip(flat1, flat2))


def test_exclude_keeps_components_out():
    banned = {"slice_prefix", "narrow", "index_list", "index_select", "slice_step", "tied_weights"}
    for seed in range(10):
        assert not (make_model(seed, exclude=banned)[2].components & banned)
