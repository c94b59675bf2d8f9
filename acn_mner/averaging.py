"""Checkpoint averaging: the mean of the weights of a run's last epochs, one candidate beside the best single epoch.

`train_acn.py --average_last_epochs N` keeps the weights of the last N epochs; at the end it scores the averages of
the last 2 ... N on dev and keeps whichever model (those or the best single epoch) scores best there.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

EPOCH_WEIGHTS_DIR = "epoch_weights"  # under the run's checkpoint folder: epoch_<n> per kept epoch


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of `states` (same keys and shapes) for floating-point tensors, computed as
    ``first + sum(state - first) / k`` so that a tensor equal in every state (a frozen trunk) comes back bit for bit;
    other tensors (integer buffers) are taken from the last state."""
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict, got none")
    first, last = states[0], states[-1]
    for number, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            differing = sorted(set(state) ^ set(first))[:5]
            raise ValueError(f"state dict {number} of {len(states)} has other keys than the first: {differing}")
    averaged = {}
    for key, tensor in first.items():
        if not tensor.is_floating_point():
            averaged[key] = last[key].clone()
            continue
        shapes = {tuple(state[key].shape) for state in states}
        if len(shapes) > 1:
            raise ValueError(f"{key!r} has different shapes across the state dicts: {sorted(shapes)}")
        total = torch.zeros_like(tensor, dtype=torch.float64)  # (*shape)
        for state in states[1:]:
            total += state[key].double() - tensor.double()  # (*shape)
        averaged[key] = (tensor.double() + total / len(states)).to(tensor.dtype)  # (*shape)
    return averaged


def epoch_folder(checkpoint_dir: Path, epoch: int) -> Path:
    """Where the weights after `epoch` (counted from 1) are kept."""
    return checkpoint_dir / EPOCH_WEIGHTS_DIR / f"epoch_{epoch}"


def kept_epochs(checkpoint_dir: Path) -> list[int]:
    """The epochs (from 1) whose weights are kept, in order."""
    folder = checkpoint_dir / EPOCH_WEIGHTS_DIR
    if not folder.is_dir():
        return []
    names = (path.name.removeprefix("epoch_") for path in folder.iterdir() if path.name.startswith("epoch_"))
    return sorted(int(name) for name in names if name.isdigit())
