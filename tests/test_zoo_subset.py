"""A representative subset of the torchvision zoo, pruned by 50% of channels.

The whole zoo runs with ``python scripts/prune_zoo.py`` (and ``pytest -m slow``).
"""

from __future__ import annotations

import pytest

from lightning_prune.bench.zoo import check_model, float_model_names

SUBSET = {
    "resnet18": 64, "densenet121": 64, "mobilenet_v3_small": 64, "convnext_tiny": 64, "vit_b_16": None,
    "swin_t": 96, "shufflenet_v2_x0_5": 64, "resnext50_32x4d": 64, "efficientnet_b0": 64,
    "regnet_y_400mf": 64, "fasterrcnn_mobilenet_v3_large_320_fpn": 160,
    "deeplabv3_mobilenet_v3_large": 64, "r3d_18": None, "raft_small": None,
}


@pytest.mark.parametrize("name", list(SUBSET))
def test_model_is_prunable(name):
    res = check_model(name, ratio=0.5, image_size=SUBSET[name])
    assert res.ok, res.error
    assert res.params_after < res.params_before
    assert res.pruned_groups >= max(1, res.groups // 3)  # most groups really pruned


@pytest.mark.slow
@pytest.mark.parametrize("name", float_model_names())
def test_whole_zoo(name):
    res = check_model(name, ratio=0.5)
    assert res.ok, res.error
