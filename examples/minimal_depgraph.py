"""The seed README's minimal example, with only the import changed.

    python examples/minimal_depgraph.py

Builds the dependency graph of a ResNet-18, prunes channels [2, 6, 9] of ``conv1`` and
everything coupled to them, prints the group, and saves/loads the pruned model.
(The seed loads pretrained weights; nothing is downloaded here, so the model is random.)
"""

import torch
from torchvision.models import resnet18

import lightning_prune.engine as tp

model = resnet18().eval()

# 1. Build dependency graph for a resnet18. This requires a dummy input for forwarding
DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))

# 2. Get the group for pruning model.conv1 with the specified channel idxs
group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[2, 6, 9])

# 3. Do the pruning
if DG.check_pruning_group(group):  # avoid over-pruning, i.e., channels=0.
    group.prune()

print(group.details())  # or print(group)

# 4. Save & Load (whole-model pickling, as in the seed; see docs/engine.md for the
#    weights_only-friendly record format)
model.zero_grad()  # clear gradients to avoid a large file size
torch.save(model, "model.pth")  # !! no .state_dict for saving
model = torch.load("model.pth", weights_only=False)  # load the pruned model
macs, params = tp.utils.count_ops_and_params(model, torch.randn(1, 3, 224, 224))
print(f"conv1: {model.conv1}; MACs {macs / 1e9:.3f} G, params {params / 1e6:.2f} M")
