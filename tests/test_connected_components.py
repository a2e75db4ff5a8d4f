"""The vectorized connected-components pass that turns the trace's unions into groups."""

from __future__ import annotations

import pytest
import torch

from lightning_prune.engine.trace.labels import connected_components


def _reference(n: int, a: list[int], b: list[int]) -> list[int]:
    """Plain union-find; each node labelled with the smallest id in its component."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return [find(x) for x in range(n)]


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_plain_union_find_on_random_graphs(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 3000, (1,), generator=g))
    m = int(torch.randint(0, 2 * n, (1,), generator=g))
    a, b = torch.randint(0, n, (m,), generator=g), torch.randint(0, n, (m,), generator=g)
    assert connected_components(n, a, b).tolist() == _reference(n, a.tolist(), b.tolist())


def test_long_chains_and_self_loops_resolve():
    """A chain listed backwards needs many hook rounds; self-loops and repeated edges are no-ops."""
    n = 2000
    a = torch.arange(n - 1, 0, -1)
    b = a - 1
    a = torch.cat([a, torch.arange(n), a[:10]])
    b = torch.cat([b, torch.arange(n), b[:10]])
    assert connected_components(n, a, b).tolist() == [0] * n
    # two interleaved chains: even ids and odd ids stay apart
    evens, odds = torch.arange(0, n - 2, 2), torch.arange(1, n - 2, 2)
    a, b = torch.cat([evens + 2, odds]), torch.cat([evens, odds + 2])
    assert connected_components(n, a, b).tolist() == [i % 2 for i in range(n)]
