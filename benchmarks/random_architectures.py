"""Hunt for silent breaks: prune random architectures and check they still run.

Each seed gives a small random model (tests/random_architectures.py) that is pruned
group by group, again on the same graph, and by MetaPruner at ratio 0.5
(tests/arch_probe.py). Prints one line per model that did not pass and a tally::

    python benchmarks/random_architectures.py --seeds 300
    python benchmarks/random_architectures.py --seeds 200 --start 1000 --exclude slice_prefix,narrow
    python benchmarks/random_architectures.py --seeds 1 --start 17 --trace   # one model, with traceback

A model passes when it was pruned and still runs, or when the engine refused clearly and
left it unchanged. "silent": a prune returned and the model then failed forward or
backward or changed an output shape (or a refusal changed the model); "crash": another
exception from the engine.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402
from arch_probe import probe, tally_line  # noqa: E402
from random_architectures import COMPONENTS, make_model  # noqa: E402

import lightning_prune.engine as tp  # noqa: E402


def signature(res) -> str:
    """A failure with its numbers and names blurred, to count distinct failure classes."""
    text = re.sub(r"\d+", "N", res.first_line())
    text = re.sub(r"(rooted at|group|in) [\w.]+", r"\1 X", text)
    return f"{res.outcome}: {text[:110]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100, help="how many models")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--exclude", default="", help="comma-separated components the models must not use")
    ap.add_argument("--no-focus", action="store_true", help="plain random draws (no per-seed focus component)")
    ap.add_argument("--no-meta", action="store_true", help="skip the MetaPruner.step probe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", action="store_true", help="print the traceback of every failure")
    ap.add_argument("--verbose", action="store_true", help="also print refused models")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    exclude = [c for c in args.exclude.split(",") if c]
    outcomes = []
    stages = collections.Counter()
    comps = collections.Counter()
    t0 = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        model, inputs, desc = make_model(seed, exclude=exclude, focus=not args.no_focus)
        comps.update(desc.components)
        res = probe(model, inputs, seed=seed, meta=not args.no_meta)
        outcomes.append(res)
        if res.outcome in ("silent", "crash") or (args.verbose and res.outcome == "refused"):
            stages[res.stage.split(":")[0].split(" (")[0]] += 1
            print(f"seed {seed:5d} {res.outcome:7s} [{res.stage}] {res.first_line()[:220]}\n"
                  f"           {desc.summary[:240]}", flush=True)
            if args.trace and res.trace:
                print(res.trace)
    dt = time.perf_counter() - t0
    print(tally_line(outcomes))
    n_groups = sum(o.groups for o in outcomes)
    n_pruned = sum(o.pruned for o in outcomes)
    n_refused = sum(o.refused for o in outcomes)
    meta = collections.Counter(o.meta.split(":")[0] or "(not reached)" for o in outcomes)
    print(f"groups found {n_groups}, group prunes returned {n_pruned}, refused {n_refused}; "
          f"MetaPruner: {dict(meta)}")
    sigs = collections.Counter(signature(o) for o in outcomes if not o.passed)
    if sigs:
        print("failure signatures (numbers replaced by N):")
        for sig, n in sigs.most_common():
            print(f"  {n:4d}  {sig}")
    missing = [c for c in COMPONENTS if not comps[c]]
    print(f"components used: {len(COMPONENTS) - len(missing)}/{len(COMPONENTS)}"
          + (f" (missing {missing})" if missing else ""))
    print(f"{dt:.1f} s, {1000 * dt / max(1, len(outcomes)):.0f} ms per model at {args.threads} thread(s); "
          f"engine from {os.path.dirname(tp.__file__)}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
