"""Fingerprint what one pruner step removes, to prove a refactor changed no behaviour.

    python benchmarks/step_records.py --out /tmp/before.json        # on the old commit
    python benchmarks/step_records.py --compare /tmp/before.json    # on the new one

For each model (torchvision, seeded random init), one ``MetaPruner`` step at ratio 0.5
with L2 group magnitude is recorded: every sliced tensor with the kept indices of each
slice, every changed attribute, and the parameter count left. ``--compare`` prints, per
model, ``identical`` or the first differences, and exits 1 if any model differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch
import torchvision.models as tvm

import lightning_prune.engine as tp

MODELS = ("resnet50", "vit_b_16", "densenet121", "mobilenet_v3_large", "swin_t")


def step_record(name: str) -> dict:
    torch.manual_seed(0)
    model = getattr(tvm, name)().eval()
    x = torch.randn(1, 3, 224, 224)
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5)
    record = pruner.step()
    tensors = {k: [[int(d), list(map(int, keep))] for d, keep in v] for k, v in sorted(record["tensors"].items())}
    attributes = {k: repr(v) for k, v in sorted(record["attributes"].items())}
    body = json.dumps({"tensors": tensors, "attributes": attributes}, sort_keys=True)
    return {"sha256": hashlib.sha256(body.encode()).hexdigest(), "tensors": tensors, "attributes": attributes,
            "params": sum(p.numel() for p in model.parameters())}


def first_differences(old: dict, new: dict, limit: int = 5) -> list[str]:
    out = []
    for part in ("tensors", "attributes"):
        for key in sorted(set(old[part]) | set(new[part])):
            if old[part].get(key) != new[part].get(key):
                out.append(f"{part}[{key}]")
                if len(out) >= limit:
                    return out
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", help="write the fingerprints here")
    parser.add_argument("--compare", help="compare with fingerprints written before")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = {name: step_record(name) for name in args.models}
    for name, rec in records.items():
        print(f"{name:20s} sha256 {rec['sha256'][:16]}  tensors {len(rec['tensors']):4d}  "
              f"attributes {len(rec['attributes']):4d}  params left {rec['params']:,}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f)
    status = 0
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        for name, rec in records.items():
            old = before.get(name)
            if old is None:
                print(f"{name}: not in {args.compare}")
                status = 1
            elif old["sha256"] == rec["sha256"] and old["params"] == rec["params"]:
                print(f"{name}: identical")
            else:
                print(f"{name}: DIFFERENT: {', '.join(first_differences(old, rec))}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
