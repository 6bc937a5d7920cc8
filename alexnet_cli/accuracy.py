"""Top-k accuracy, the paper's measure (section 6: top-1 and top-5 error rates).

Train (per step), validation and `alexnet eval` all count hits with `topk_correct`, so the
three cannot disagree on what a hit is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOPK = (1, 5)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK) -> torch.Tensor:
    """[len(ks), N] bool: is each image's label among its k highest scores (logits or
    probabilities)? A k at or above the class count counts every image (top-5 of a 3-class
    problem is 100%)."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    match = top == labels[:, None]
    return torch.stack([match[:, :k].any(dim=1) for k in ks])


def class_counts(correct: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [1 + len(ks), num_classes]: images per class, then each k's hits per class."""
    rows = [torch.bincount(labels, minlength=num_classes)]
    rows += [torch.bincount(labels[hit], minlength=num_classes) for hit in correct]
    return torch.stack(rows)
