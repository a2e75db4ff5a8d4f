"""scikit-learn's handwritten digits as standardized torch tensors.

The 1,797 8x8 grey-scale digits ship inside scikit-learn, so tests, benchmarks and the
Lightning example train on real data without a download. A tiny CNN reaches ~98% on
them in seconds, which makes them good for measuring what pruning costs in accuracy.

torch-only on purpose: the engine tests and benchmarks use it without Lightning.
"""

from __future__ import annotations

import torch

__all__ = ["load_digits_split"]

_INSTALL_HINT = (
    "load_digits_split needs scikit-learn (it ships the digits data): "
    "pip install scikit-learn, or pip install -e '.[dev]'"
)


def _load_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 8, 8] in [0, 1] and int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) holding ``val_fraction`` of every class in val.

    Stratified so that every class is represented in the same proportion in both parts;
    deterministic through a private generator so the global RNG is left alone.
    """
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train_idx, val_idx = torch.cat(train), torch.cat(val)
    # Shuffle across classes too, so the first k samples are a fair subset.
    train_idx = train_idx[torch.randperm(len(train_idx), generator=gen)]
    val_idx = val_idx[torch.randperm(len(val_idx), generator=gen)]
    return train_idx, val_idx


def load_digits_split(
    val_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits, split into train and validation parts.

    Images are scaled to [0, 1] and then standardized with the *training* mean and std
    (one scalar each), so no validation statistic leaks into training.

    Args:
        val_fraction: fraction of each class held out for validation, in (0, 1).
        seed: seed of the stratified shuffle; the same seed gives the same split.

    Returns:
        ``(x_train, y_train, x_val, y_val)``: float32 images ``[N, 1, 8, 8]`` and int64
        labels ``[N]`` in 0..9.

    Raises:
        ImportError: scikit-learn is not installed.
        ValueError: ``val_fraction`` is not in (0, 1).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    images, labels = _load_arrays()
    train_idx, val_idx = _stratified_split(labels, val_fraction, seed)
    x_train, x_val = images[train_idx], images[val_idx]
    mean, std = x_train.mean(), x_train.std()
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std
    return x_train.contiguous(), labels[train_idx].contiguous(), x_val.contiguous(), labels[val_idx].contiguous()
