"""Fig. 1/2-style panels of the C2F attacks (Heidarizadeh et al., Sect. IV): LRP of the original and
the runner-up class before and after each attack, plus the perturbation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from robex.attacks.lrp_attack import LRP, LRPOptions
from robex.models.c2f import C2FClassifier


def _heatmap(ax, relevance: torch.Tensor, title: str) -> None:
    """Channel-summed relevance, red positive / blue negative, symmetric colour scale."""
    heat = relevance.sum(0).cpu().numpy()
    limit = max(float(abs(heat).max()), 1e-12)
    ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _image(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def lrp_panel(
    model: C2FClassifier,
    image: torch.Tensor,
    fine_label: int,
    level: str,
    adversarials: dict[str, torch.Tensor],
    class_names: Callable[[int], str] | None = None,
    options: LRPOptions | None = None,
):
    """Fig. 1 (coarse) / Fig. 2 (fine) for one image: a column for the benign image and one per attack.

    Rows: LRP of the original class (r_org / f_org) with ||R+||_1 and ||R-||_1, LRP of the
    runner-up class (r_adv / f_adv, eq. 6/8, fixed from the benign image), and the image with
    its predicted label and score (benign) or the perturbation (attacks, rescaled to be seen).
    The maps use ``options`` (default: the paper's rules with zennit's bias convention, one-hot start).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hierarchy = model.hierarchy
    device = next(model.parameters()).device
    coarse = int(hierarchy.coarse_of(torch.tensor([fine_label]))[0])
    if level == "coarse":
        head, names = model.coarse, list(hierarchy.coarse_names)
    else:
        head = model.fine[coarse]
        names = [hierarchy.fine_names[f] for f in hierarchy.members(coarse)]
    explainer = LRP(head, options or LRPOptions(relevance_init="onehot"))
    columns = {"benign": image, **adversarials}
    batch = torch.stack(list(columns.values())).to(device)
    with torch.no_grad():
        probabilities = head(batch).softmax(1)
    original, runner_up = probabilities[0].topk(2).indices.tolist()
    count = len(columns)
    _, relevance_org = explainer(batch, torch.full((count,), original, device=device))
    _, relevance_adv = explainer(batch, torch.full((count,), runner_up, device=device))
    figure, axes = plt.subplots(3, count, figsize=(2.0 * count, 7.4), squeeze=False)
    for column, (label, picture) in enumerate(columns.items()):
        label = label.replace(" (", "\n(")  # "LRPC eps=10\n(working)": column titles must not overlap
        for row, (heatmap, cls) in enumerate(((relevance_org[column], original), (relevance_adv[column], runner_up))):
            positive = float(heatmap.clamp(min=0).sum())
            negative = float((-heatmap).clamp(min=0).sum())
            role = ("r" if level == "coarse" else "f") + ("_org" if row == 0 else "_adv")
            _heatmap(axes[row, column], heatmap.detach(), f"{label}\nLRP {role}={names[cls]}\n|R+|={positive:.3g} |R-|={negative:.3g}")
        prediction = int(probabilities[column].argmax())
        score = float(probabilities[column, prediction])
        if column == 0:
            _image(axes[2, 0], picture, f"benign: {names[prediction]} ({score:.2f})")
        else:
            eta = picture - image
            scale = max(float(eta.abs().max()), 1e-12)
            _image(axes[2, column], 0.5 + 0.5 * eta / scale,
                   f"eta (x{0.5 / scale:.0f}), ||eta||inf={255 * float(eta.abs().max()):.1f}/255\n-> {names[prediction]} ({score:.2f})")
    figure.suptitle(f"{level}-level attacks, true class {hierarchy.fine_names[fine_label]}", fontsize=9)
    figure.tight_layout()
    return figure


def example_panels(model: C2FClassifier, images: torch.Tensor, fine_labels: torch.Tensor,
                   examples: dict[str, dict[str, torch.Tensor]], count: int) -> dict[str, object]:
    """File name -> Fig. 1 (coarse) / Fig. 2 (fine) panel for the first ``count`` images;
    ``examples`` maps level -> attack label -> its first adversarial images."""
    panels = {}
    for level, attacked in examples.items():
        for index in range(min(count, len(images)) if attacked else 0):
            name = f"fig{1 if level == 'coarse' else 2}_{level}_example{index}.png"
            panels[name] = lrp_panel(model, images[index], int(fine_labels[index]), level, {k: v[index] for k, v in attacked.items()})
    return panels
