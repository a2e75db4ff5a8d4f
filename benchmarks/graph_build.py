"""Graph-build benchmark: our DependencyGraph against Torch-Pruning's, in one run.

    python benchmarks/graph_build.py [--repeats 9] [--threads 1] [--models [mobilenet_v3_large]]
                                     [--skip_scaling true] [--skip_1b true]

Prints the median build time for torchvision models and, when ``torch_pruning`` is
installed, its time and the ratio ours/theirs measured in the same process, the two
libraries' runs taking turns. Then builds
ResNet-style stacks of growing depth (build time should grow linearly) and a ~1 B
parameter transformer, printing time and peak extra memory (RSS high-water mark).

Torch-Pruning is used here only as a baseline; lightning_prune never imports it.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

import lightning_prune.engine as lp

MODELS = ["resnet50", "vit_b_16", "densenet121", "convnext_tiny", "mobilenet_v3_large"]


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Lets a collection before every timed run skip the objects that outlive the runs.

    Collecting before each run keeps the previous run's garbage from piling up
    (Torch-Pruning's graph holds reference cycles that keep its traced activations alive;
    with the collector simply off, its resnet50 build went from 170 to 280 ms) and keeps
    collections out of the timed region. But a full collection walks every object in the
    process (about 150 ms here, with torch and torchvision loaded) and leaves the caches
    cold: the MobileNetV3 build right after one took 16.4 instead of 13.3 ms.
    ``gc.freeze()`` moves everything alive now (modules, the models) out of the
    collector's sight, so each per-run collection only walks what earlier runs left.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def interleaved(runs: list[Callable[[], Any]], repeats: int, warm_up: bool = True) -> list[list[Any]]:
    """What each of ``runs`` returns, ``repeats`` times, the runs taking turns.

    Each run is called once as a warm-up (unless ``warm_up=False``), then once per round. Taking turns gives the
    libraries compared the same machine: this one's speed drifts by up to 1.5x over
    minutes, and timing all of one library's runs before the other's put that drift into
    the ratio. The order flips every round, so neither always runs right after the other
    (Torch-Pruning's real forward leaves the caches full of its activations). A run times
    itself (see :func:`timed_ms`), so its set-up can stay outside the timed region.
    """
    for run in runs if warm_up else ():
        run()
    results: list[list[Any]] = [[] for _ in runs]
    with long_lived_frozen():
        for k in range(repeats):
            for i in (range(len(runs)) if k % 2 == 0 else reversed(range(len(runs)))):
                gc.collect()
                results[i].append(runs[i]())
    return results


def timed_ms(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a run that returns its own wall time in ms."""

    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)

    return run


def torch_pruning_or_none():
    try:
        import torch_pruning

        return torch_pruning
    except ImportError:
        return None


def bench_zoo(repeats: int, models: list[str]) -> None:
    tp = torch_pruning_or_none()
    print(f"{'model':22s} {'ours (ms)':>10s} {'torch-pruning (ms)':>19s} {'ours/theirs':>12s}")
    for name in models:
        model = tvm.get_model(name).eval()
        x = torch.randn(1, 3, 224, 224)
        runs = [timed_ms(lambda m=model, x=x: lp.DependencyGraph().build_dependency(m, x))]
        if tp is not None:
            runs.append(timed_ms(lambda m=model, x=x: tp.DependencyGraph().build_dependency(m, x)))
        medians = [statistics.median(times) for times in interleaved(runs, repeats)]
        if tp is not None:
            print(f"{name:22s} {medians[0]:10.1f} {medians[1]:19.1f} {medians[0] / medians[1]:11.2f}x")
        else:
            print(f"{name:22s} {medians[0]:10.1f} {'(not installed)':>19s}")


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def deep_resnet(blocks: int, c: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), *[Block(c) for _ in range(blocks)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = (f(x).view(B, N, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(B, N, -1))


class DecoderBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 32000, d: int = 2048, layers: int = 20, heads: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*[DecoderBlock(d, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        return self.lm_head(self.norm(self.blocks(self.embed(idx))))


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_extra_mb(fn) -> tuple[float, float]:
    """Run ``fn`` once; (seconds, peak RSS above the starting RSS in MB)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the RSS high-water mark
    except OSError:
        pass
    start = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    fn()
    secs = time.perf_counter() - t0
    return secs, max(0, _rss_kb("VmHWM") - start) / 1024


def bench_scaling() -> None:
    print("\nDepth scaling (ResNet-style stack, 16 channels, 1x3x16x16):")
    print(f"{'blocks':>7s} {'build (ms)':>11s} {'ms/block':>9s} {'peak extra MB':>14s}")
    for blocks in (50, 200, 800):
        model = deep_resnet(blocks).eval()
        x = torch.randn(1, 3, 16, 16)
        lp.DependencyGraph().build_dependency(model, x)
        secs, mb = peak_extra_mb(lambda m=model, x=x: lp.DependencyGraph().build_dependency(m, x))
        print(f"{blocks:7d} {1000 * secs:11.1f} {1000 * secs / blocks:9.2f} {mb:14.1f}")


def bench_1b() -> None:
    with torch.device("meta"):
        model = GPT()
    model = model.to_empty(device="cpu")  # real CPU tensors, no time spent on init
    n = sum(p.numel() for p in model.parameters())
    idx = torch.randint(0, 32000, (1, 128))
    secs, mb = peak_extra_mb(lambda: lp.DependencyGraph().build_dependency(model, idx))
    print(f"\n~1B transformer ({n / 1e9:.2f} B params, 20 blocks, d=2048): build {secs:.2f} s, "
          f"peak extra memory {mb:.0f} MB (target: under 10 s)")


def main(repeats: int = 9, threads: int = 2, models: list[str] | None = None, skip_scaling: bool = False,
         skip_1b: bool = False) -> None:
    """Graph-build benchmark: ours against Torch-Pruning's, the libraries taking turns.

    Args:
        repeats: timed builds per model and library (the median is printed).
        threads: torch's intra-op threads for the run (1: the engine's bookkeeping alone).
        models: torchvision model names (default: resnet50, vit_b_16, densenet121,
            convnext_tiny, mobilenet_v3_large).
        skip_scaling: skip the depth-scaling stacks.
        skip_1b: skip the ~1 B parameter transformer.
    """
    if repeats < 1 or threads < 1:
        raise ValueError(f"repeats and threads must be >= 1, got repeats={repeats}, threads={threads}")
    torch.set_num_threads(threads)
    bench_zoo(repeats, models or MODELS)
    if not skip_scaling:
        bench_scaling()
    if not skip_1b:
        bench_1b()


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main)
