"""The graph's state has one owner each: element tables, typed layouts, groups with a public interface.

These pin the layout of ``lightning_prune.engine.graph``: the tables and the graph declare
every field in ``__init__``, a group layout is a named type, and no graph module reaches
into another object's private attributes. The two fast-path tests repeat the ones of
tests/test_graph.py through the public names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import lightning_prune.engine as tp
from lightning_prune.engine.graph.dependency import resolve_ignored
from lightning_prune.engine.graph.grouping import group_from
from lightning_prune.engine.graph.layout import GroupLayout
from lightning_prune.engine.graph.names import ModelIndex
from lightning_prune.engine.graph.tables import ElementTables

GRAPH = Path(__file__).resolve().parents[1] / "lightning_prune" / "engine" / "graph"


def _small_densenet() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.densenet121(weights=None).features[:5].eval(), torch.randn(1, 3, 32, 32)


def _vit() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    return model, torch.randn(1, 3, 32, 32)


def test_graph_and_tables_declare_every_field_in_init():
    """Nothing after ``__init__`` adds an attribute: a build, groups, sub-groups and prunes only
    change the values."""
    model, x = _vit()
    DG = tp.DependencyGraph()
    declared = set(vars(DG))
    DG.build_dependency(model, x)
    assert set(vars(DG)) == declared
    assert isinstance(DG.tables, ElementTables) and isinstance(DG.names, ModelIndex)
    tables_fields = set(vars(DG.tables))
    groups = list(DG.get_all_groups())
    DG.group_for_units(groups[0], [0]).prune()
    single = DG.get_pruning_group(model.encoder.layers[0].mlp[0], tp.prune_linear_out_channels, [1, 2])
    assert len(single) > 1  # items built: the unit scratch table and the component index exist now
    single.prune()
    last = DG.group_for_units(groups[-1], [0])
    assert not DG.check_pruning_group(groups[-1]) and DG.check_pruning_group(last)  # all channels / one unit
    last.soft_prune()
    last.prune()
    assert set(vars(DG)) == declared and set(vars(DG.tables)) == tables_fields
    assert DG.version == DG.tables.version > 1 and DG.spaces is DG.tables.spaces


def test_a_graph_before_its_build():
    DG = tp.DependencyGraph()
    assert DG.version == 0 and DG.spaces == [] and DG.tables is None
    with pytest.raises(RuntimeError, match="build_dependency"):
        list(DG.get_all_groups())


def test_group_layouts_are_named_and_groups_expose_what_the_graph_needs():
    model, x = _small_densenet()
    DG = tp.DependencyGraph().build_dependency(model, x)
    for group in DG.get_all_groups():
        layout = group.layout
        assert isinstance(layout, GroupLayout) and layout._fields == ("targets", "space_ids", "counts",
                                                                      "elem_comps", "pos")
        assert group.targets is layout.targets and list(layout.targets) == layout.space_ids
        assert [len(layout.targets[s]) for s in layout.space_ids] == layout.counts
        assert layout.elem_comps.numel() == layout.pos.numel() == sum(layout.counts)
        assert DG.spaces[group.root_space].name == group.root_name
        assert len(group.unit_components) == len(group.units) and group.version == DG.version
        assert group.components is not None and not group.applied
    sub = DG.group_for_units(group, [0])
    sub.prune()
    assert sub.applied and sub.components is None  # it keeps describing what it removed


def test_sub_groups_from_a_layout_match_a_fresh_derivation_public_names():
    model, x = _small_densenet()
    DG = tp.DependencyGraph().build_dependency(model, x)
    generator = torch.Generator().manual_seed(0)
    for k, group in enumerate(list(DG.get_all_groups())):
        units = sorted(torch.randperm(len(group.units), generator=generator)[: max(1, len(group.units) // 3)].tolist())
        sub = DG.group_for_units(group, units)
        comps = torch.as_tensor([group.unit_components[u] for u in units])
        fresh = group_from(DG, DG.tables, group.root_space, comps)
        assert sub.targets == fresh.targets and sub.units == fresh.units
        assert [(d.target.name, list(i)) for d, i in sub] == [(d.target.name, list(i)) for d, i in fresh]
        if k % 2 == 0:
            sub.prune()


def test_all_groups_match_with_and_without_the_in_order_fast_path_public_names():
    model, x = _small_densenet()
    DG = tp.DependencyGraph().build_dependency(model, x)
    tables = DG.tables
    for _ in range(2):
        assert tables.elems_in_order
        fast = [(g.root_space, g.targets, g.units) for g in DG.get_all_groups()]
        tables.elems_in_order = False
        slow = [(g.root_space, g.targets, g.units) for g in DG.get_all_groups()]
        tables.elems_in_order = True
        assert fast == slow and len(fast) > 3
        for group in list(DG.get_all_groups())[::2]:
            DG.group_for_units(group, list(range(0, len(group.units), 3))).prune()


@pytest.mark.parametrize("make", [_small_densenet, _vit], ids=["densenet", "vit"])
def test_a_traces_element_index_matches_the_general_path(make):
    """A fresh trace's tables index elements from the spaces' allocation runs; the
    general path (every space's ids scattered) must give the same index."""
    model, x = make()
    tables = tp.DependencyGraph().build_dependency(model, x).tables
    general = ElementTables(tables.spaces, tables.comp, tables.comp_sensitive, tables.comp_heads,
                            tables.edges, tables.version)
    assert tables.elems_in_order and general.elems_in_order
    assert torch.equal(tables.elem_space, general.elem_space)
    assert torch.equal(tables.elem_pos, general.elem_pos)
    assert int((tables.elem_space >= 0).sum()) == tables.comp.numel() - 1  # all but FROZEN


def test_a_group_held_across_prunes_is_refreshed_through_the_graph():
    """Pruning the stem shifts where denselayer1's channels sit in the concat readers: the
    held group is re-derived from its components and adopts the new positions."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).features[:6].eval()  # through transition1
    DG = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32))
    groups = {g.root_name: g for g in DG.get_all_groups()}
    held = groups["denseblock1.denselayer1.conv2"]
    before, units, made_at = dict(held.targets), list(held.unit_components), held.version
    DG.group_for_units(groups["conv0"], [0, 1]).prune()
    assert DG.version > made_at and held.version == made_at
    assert DG.refresh_group(held) is held and held.version == DG.version
    assert held.targets != before and held.unit_components == units
    assert not DG.check_pruning_group(held)  # every channel of its root
    assert DG.check_pruning_group(DG.group_for_units(held, [0]))


def test_resolve_ignored_keeps_its_old_import_path():
    model, _ = _small_densenet()
    assert resolve_ignored(model, ["conv0"]) == [model.conv0]


# nn.Module's own slots (read by the snapshot) and torch's conv base class
_FOREIGN_PRIVATE = {"_parameters", "_buffers", "_ConvNd"}
# a group adopting a fresh derivation of itself: same class
_SAME_CLASS = {("group.py", "_items_or_factory")}


def test_no_graph_module_reads_another_objects_private_attributes():
    bad = []
    for path in sorted(GRAPH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in _FOREIGN_PRIVATE or (path.name, node.attr) in _SAME_CLASS:
                continue
            bad.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not bad, "use a public attribute or method instead:\n" + "\n".join(bad)
