"""Losses and metrics of the three task families: single-label, multi-label (k = 2), C2F."""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F

from robex.data.hierarchy import Hierarchy


class Task(str, Enum):
    single_label = "single_label"
    multi_label = "multi_label"
    c2f = "c2f"


def top_k_set(logits: torch.Tensor, k: int = 2) -> torch.Tensor:
    """k-hot prediction: the k highest scores (the multi-label classification of Mour 2023)."""
    return torch.zeros_like(logits).scatter_(1, logits.topk(k, dim=1).indices, 1.0)


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, k: int = 2) -> dict[str, torch.Tensor]:
    """Exact-set accuracy (the predicted top-k set is the true set) and per-label accuracy (share of
    the N x L label decisions that are right), by torchmetrics on the k-hot prediction."""
    from torchmetrics.functional.classification import multilabel_accuracy, multilabel_exact_match

    predicted, truth, labels = top_k_set(logits, k), targets.long(), logits.shape[1]
    return {
        "exact_set_acc": multilabel_exact_match(predicted, truth, num_labels=labels),
        "per_label_acc": multilabel_accuracy(predicted, truth, num_labels=labels, average="micro"),
    }


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy over the batch (torchmetrics, micro average = share of correct samples)."""
    from torchmetrics.functional.classification import multiclass_accuracy

    return multiclass_accuracy(logits.argmax(dim=1), targets, num_classes=logits.shape[1], average="micro")


def per_sample_loss(task: Task, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss per sample, used by training and by the PGD defense (which ascends it)."""
    if task == Task.multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(dim=1)
    return F.cross_entropy(logits, targets, reduction="none")


def c2f_loss_and_metrics(model, images: torch.Tensor, fine: torch.Tensor, hierarchy: Hierarchy) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Coarse cross-entropy + each fine head's cross-entropy on the images of its coarse class.

    Metrics (Heidarizadeh et al., Sect. IV): coarse accuracy, fine accuracy given the true
    coarse class (each fine head on its own images), end-to-end fine accuracy (coarse first,
    then fine within the predicted coarse class).
    """
    coarse = hierarchy.coarse_of(fine)
    local = hierarchy.local_index(fine)
    coarse_logits = model.coarse_logits(images)
    loss = F.cross_entropy(coarse_logits, coarse)
    fine_correct = torch.zeros_like(fine, dtype=torch.bool)
    end_to_end = torch.zeros_like(fine, dtype=torch.bool)
    predicted_coarse = coarse_logits.argmax(dim=1)
    for c in range(hierarchy.num_coarse):
        rows = coarse == c
        if rows.any():
            fine_logits = model.fine_logits(images[rows], c)
            loss = loss + F.cross_entropy(fine_logits, local[rows]) * rows.float().mean()
            hit = fine_logits.argmax(dim=1) == local[rows]
            fine_correct[rows] = hit
            end_to_end[rows] = hit & (predicted_coarse[rows] == c)
    # the two fine accuracies are per-sample hits from different heads (the true coarse class's,
    # or the predicted one's): torchmetrics has no hierarchical metric, so they stay hand-written
    metrics = {
        "coarse_acc": accuracy(coarse_logits, coarse),
        "fine_acc_given_coarse": fine_correct.float().mean(),
        "fine_acc": end_to_end.float().mean(),
    }
    return loss, metrics
