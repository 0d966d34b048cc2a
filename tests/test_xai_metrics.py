"""XAI metrics of thesis Sect. 3.3 on hand-made cases with known values."""

import torch
from torch import nn

from robex.explain.metrics import (
    area_under_curve,
    average_drop_increase,
    coherency,
    constant_maps,
    explanation_map,
    insertion_deletion_curves,
    pearson_per_image,
    pixel_ranks,
)


class BrightCornerModel(nn.Module):
    """Class 0's logit grows with the mean brightness of the top-left 2x2 corner, class 1 is fixed."""

    def forward(self, x):
        corner = x[:, :, :2, :2].mean(dim=(1, 2, 3)) * 20
        return torch.stack([corner, torch.full_like(corner, 10.0)], dim=1)


def test_average_drop_and_increase_known_values():
    y = torch.tensor([0.8, 0.5, 0.4, 0.9])
    o = torch.tensor([0.8, 0.25, 0.6, 0.0])
    drop, increase = average_drop_increase(y, o)
    torch.testing.assert_close(drop, torch.tensor([0.0, 50.0, 0.0, 100.0]))
    torch.testing.assert_close(increase, torch.tensor([0.0, 0.0, 100.0, 0.0]))
    # a map that keeps everything leaves the image and its scores untouched: Average Drop 0
    images = torch.rand(3, 3, 8, 8)
    kept = explanation_map(images, torch.ones(3, 8, 8))
    model = BrightCornerModel()
    scores = torch.softmax(model(images), 1)[:, 0]
    drop, increase = average_drop_increase(scores, torch.softmax(model(kept), 1)[:, 0])
    assert float(drop.mean()) == 0.0 and float(increase.mean()) == 0.0


def test_coherency_of_a_map_with_itself_is_100_and_anticorrelated_is_0():
    maps = torch.rand(4, 8, 8)
    torch.testing.assert_close(coherency(maps, maps), torch.full((4,), 100.0))
    torch.testing.assert_close(coherency(maps, 1 - maps), torch.zeros(4), atol=1e-4, rtol=0)
    # a blank map explained twice is not "perfectly coherent": r = 0 -> 50, as in pytorch-grad-cam
    constant = torch.zeros(2, 8, 8)
    torch.testing.assert_close(coherency(constant, constant), torch.full((2,), 50.0))
    torch.testing.assert_close(coherency(torch.ones(2, 8, 8), torch.ones(2, 8, 8)), torch.full((2,), 50.0))
    torch.testing.assert_close(pearson_per_image(constant, torch.rand(2, 8, 8)), torch.zeros(2))
    assert constant_maps(torch.stack([constant[0], maps[0]])).tolist() == [True, False]
    a, b = torch.rand(1, 5, 5), torch.rand(1, 5, 5)
    expected = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    torch.testing.assert_close(pearson_per_image(a, b)[0], expected, atol=1e-6, rtol=1e-5)


def test_coherency_equals_pytorch_grad_cam_including_constant_maps():
    from pytorch_grad_cam.metrics.arcc import batch_pearson_coherency

    first = torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(0))
    second = 0.5 * first + 0.5 * torch.rand(5, 8, 8, generator=torch.Generator().manual_seed(1))
    first[0], second[0], second[1] = 0.0, 0.0, 0.3  # both constant; one constant
    library = (batch_pearson_coherency(second.numpy(), first.numpy()) + 1) / 2 * 100
    torch.testing.assert_close(coherency(first, second), torch.from_numpy(library).float(), atol=1e-4, rtol=0)


def test_pixel_ranks_order_by_decreasing_saliency():
    saliency = torch.tensor([[[0.1, 0.9], [0.5, 0.9]]])
    torch.testing.assert_close(pixel_ranks(saliency), torch.tensor([[[3, 0], [2, 1]]]))


def test_perfect_ordering_gives_minimal_deletion_and_maximal_insertion():
    model = BrightCornerModel().eval()
    images = torch.ones(2, 3, 8, 8)
    substrate = torch.zeros_like(images)
    classes = torch.zeros(2, dtype=torch.long)
    perfect = torch.zeros(2, 8, 8)
    perfect[:, :2, :2] = 1.0  # exactly the pixels the class depends on
    worst = 1 - perfect
    steps = 16  # 4 pixels per step: the whole corner in the first step
    ins_good, del_good = insertion_deletion_curves(model, images, perfect, classes, steps, substrate)
    ins_bad, del_bad = insertion_deletion_curves(model, images, worst, classes, steps, substrate)
    assert ins_good.shape == (2, steps + 1)
    p_full = torch.softmax(model(images), 1)[0, 0]
    p_empty = torch.softmax(model(substrate), 1)[0, 0]
    torch.testing.assert_close(del_good[:, 0], p_full.expand(2))
    torch.testing.assert_close(del_good[:, 1:], p_empty.expand(2, steps))
    # the deletion AUC of the perfect order is the minimum reachable with this step size
    minimum = (p_full + p_empty) / 2 / steps + p_empty * (steps - 1) / steps
    torch.testing.assert_close(area_under_curve(del_good), minimum.expand(2))
    assert torch.all(area_under_curve(del_good) < area_under_curve(del_bad))
    assert torch.all(area_under_curve(ins_good) > area_under_curve(ins_bad))
    # small batch size (chunked steps) gives the same curves
    ins_chunked, del_chunked = insertion_deletion_curves(model, images, perfect, classes, steps, substrate, batch_size=3)
    torch.testing.assert_close(ins_chunked, ins_good)
    torch.testing.assert_close(del_chunked, del_good)


def test_area_under_curve_is_trapezoid_over_unit_interval():
    curves = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0]])
    torch.testing.assert_close(area_under_curve(curves), torch.tensor([1.0, 0.5]))
