"""The engine leaves the process as it found it: torch's thread count and the GC stay the user's.

``torch.set_num_threads`` and ``gc.disable`` are process-wide. If the engine switched them
while it works, even for a moment, every other thread of the user's process would see it:
a data-loading or logging thread, a second model serving requests. Worse, a thread that
*starts* while torch is at one thread keeps one intra-op thread for its whole life (OpenMP
reads the setting once per thread). So nothing here may change them, not even
temporarily; these tests record both from inside the engine's own calls: a layer's
forward while the graph is traced, an importance while it scores, and a thread started
in the middle of a build.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_prune.engine as tp

THREADS = 2


@pytest.fixture
def process_state():
    """The process at ``THREADS`` threads with GC on; the caller's settings come back afterwards."""
    threads, enabled = torch.get_num_threads(), gc.isenabled()
    torch.set_num_threads(THREADS)
    gc.enable()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if not enabled:
            gc.disable()


SEEN: list[tuple[str, int, bool]] = []


def record(where: str) -> None:
    SEEN.append((where, torch.get_num_threads(), gc.isenabled()))


class Probe(nn.Module):
    """A custom layer (no pruner of ours) whose forward notes the process state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        record("forward")
        return x * 1.0


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.probe = Probe()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.probe(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class RecordingImportance(tp.importance.GroupMagnitudeImportance):
    """L2 magnitude that notes the process state while it scores."""

    def __call__(self, group, *args, **kwargs):
        record("importance")
        return super().__call__(group, *args, **kwargs)


X = torch.randn(2, 3, 8, 8)


def _assert_untouched(where: str) -> None:
    seen = [s for s in SEEN if s[0] == where]
    assert seen, f"nothing recorded in {where}: the probe did not run"
    assert all(threads == THREADS and enabled for _, threads, enabled in seen), seen
    assert torch.get_num_threads() == THREADS and gc.isenabled()


def test_graph_build_and_group_prune_keep_threads_and_gc(process_state):
    SEEN.clear()
    model = Net().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=X)
    _assert_untouched("forward")
    SEEN.clear()
    groups = list(DG.get_all_groups())
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[0, 1])
    assert DG.dry_run() is None  # runs the forward again, on meta
    group.prune()
    assert model.conv1.out_channels == 6 and groups
    _assert_untouched("forward")


@pytest.mark.parametrize("kwargs", [{"pruning_ratio": 0.5}, {"target_macs": 0.8}, {"global_pruning": True}])
def test_meta_pruner_construction_scoring_and_step_keep_threads_and_gc(process_state, kwargs):
    model = Net().eval()
    SEEN.clear()
    pruner = tp.pruner.MetaPruner(model, X, importance=RecordingImportance(p=2), **kwargs)
    _assert_untouched("forward")
    SEEN.clear()
    pruner.step()
    assert model.conv1.out_channels < 8
    _assert_untouched("importance")
    if "target_macs" in kwargs:  # the budget solver counts MACs on meta clones, running the forward
        _assert_untouched("forward")


def test_sparse_training_pruner_keeps_threads_and_gc(process_state):
    model = Net()
    pruner = tp.pruner.GrowingRegPruner(model, X, importance=RecordingImportance(p=2), pruning_ratio=0.5)
    SEEN.clear()
    pruner.update_regularizer()
    F.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    pruner.regularize(model)
    pruner.step()
    _assert_untouched("importance")


def test_thread_started_during_a_build_keeps_the_callers_thread_count(process_state):
    """A thread that starts mid-build reads torch's setting then, and keeps it for its life."""
    seen: list[int] = []
    release = threading.Event()
    threads: list[threading.Thread] = []

    def worker() -> None:
        seen.append(torch.get_num_threads())
        release.wait(10)
        seen.append(torch.get_num_threads())

    class Spawner(nn.Module):
        def forward(self, x):
            if not threads:
                threads.append(threading.Thread(target=worker))
                threads[0].start()
            return x + 0

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Spawner(), nn.ReLU(), nn.Conv2d(4, 4, 3))
    tp.DependencyGraph().build_dependency(model, example_inputs=X)
    release.set()
    threads[0].join()
    assert seen == [THREADS, THREADS]


def test_op_counter_leaves_the_attention_fast_path_switch_alone(process_state):
    """Counting keeps nn.MultiheadAttention off its fused kernel without flipping the process-wide switch."""

    class DataDependentAttention(nn.Module):  # branches on values: counted with a real forward
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            SEEN.append(("fastpath", torch.backends.mha.get_fastpath_enabled(), gc.isenabled()))
            if x.sum() > -1e9:
                x = self.mha(x, x, x, need_weights=False)[0]
            return x

    n, length, dim = 2, 5, 8
    SEEN.clear()
    macs, _ = tp.utils.count_ops_and_params(DataDependentAttention().eval(), torch.randn(n, length, dim))
    assert macs == n * length * dim * 3 * dim + 2 * n * length * length * dim + n * length * dim * dim
    assert SEEN and all(enabled and on for _, enabled, on in SEEN), SEEN
    assert torch.backends.mha.get_fastpath_enabled()
