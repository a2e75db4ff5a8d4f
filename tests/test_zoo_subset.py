"""The torchvision zoo, pruned by 50% of channels.

The default suite prunes three small classification models that between them cover
residual adds, depthwise convs with squeeze-excitation and channel shuffle/split. The
``slow`` suite (``pytest -m slow``) prunes one model of every family and task at small
inputs (about 5 minutes on 2 cores). The whole zoo at full size takes well over an hour
there: it runs with ``python benchmarks/prune_zoo.py`` (see docs/zoo_report.md).
"""

from __future__ import annotations

import pytest

from lightning_prune.bench.zoo import check_model, float_model_names, task_of

#: model -> image size (None: the model's own input size)
DEFAULT = {"resnet18": 64, "mobilenet_v3_small": 64, "shufflenet_v2_x0_5": 64}

#: one model of each family and task, small where the family allows it
FAMILIES = {
    # classification
    "alexnet": 64, "vgg11_bn": 32, "squeezenet1_1": 64, "googlenet": 64, "inception_v3": None,
    "densenet121": 64, "resnext50_32x4d": 64, "wide_resnet50_2": 64, "mnasnet0_5": 64, "mobilenet_v2": 64,
    "efficientnet_b0": 64, "efficientnet_v2_s": 64, "regnet_x_400mf": 64, "regnet_y_400mf": 64,
    "convnext_tiny": 64, "vit_b_16": None, "vit_b_32": None, "swin_t": 96, "swin_v2_t": 64,
    # detection, segmentation, video, optical flow
    "fasterrcnn_mobilenet_v3_large_320_fpn": 160, "retinanet_resnet50_fpn": 64, "ssd300_vgg16": 64,
    "deeplabv3_mobilenet_v3_large": 64, "lraspp_mobilenet_v3_large": 64, "fcn_resnet50": 64,
    "r3d_18": None, "r2plus1d_18": None, "s3d": None, "mvit_v2_s": None, "swin3d_t": None,
    "raft_small": None, "raft_large": None,
}


def check(name: str, image_size: int | None) -> None:
    res = check_model(name, ratio=0.5, image_size=image_size)
    assert res.ok, res.error
    assert res.params_after < res.params_before
    assert res.pruned_groups >= max(1, res.groups // 3)  # most groups really pruned


@pytest.mark.parametrize("name", list(DEFAULT))
def test_model_is_prunable(name):
    check(name, DEFAULT[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_prunable(name):
    check(name, FAMILIES[name])


def test_the_family_sample_covers_every_task_and_exists():
    names = set(float_model_names())
    assert set(FAMILIES) <= names and set(DEFAULT) <= names
    assert {task_of(n) for n in FAMILIES} == {task_of(n) for n in names}
