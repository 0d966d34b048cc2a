import functools

import lightning as L
import pytest
import torch

from robex.data.datamodules import tensor_datamodule
from robex.data.hierarchy import cifar10_hierarchy
from robex.models.c2f import C2FClassifier
from robex.models.cifar_cnn import CifarCNN
from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.models.vgg import SmallVGG
from robex.training.augment import Augment
from robex.training.defenses import PGDTraining, RandomRectangle
from robex.training.module import ClassifierModule
from robex.training.tasks import multilabel_metrics, per_sample_loss

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def _fast_dev_run(module, images, labels):
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=tensor_datamodule(images, labels, batch_size=4))
    return trainer


def test_fast_dev_run_single_label():
    module = ClassifierModule(CifarCNN(), "single_label", ADAM, augment=Augment())
    trainer = _fast_dev_run(module, torch.rand(8, 3, 32, 32), torch.arange(8) % 10)
    assert "train/acc" in trainer.callback_metrics


def test_fast_dev_run_multi_label_with_pgd_defense():
    labels = torch.zeros(8, 10)
    labels[:, 0] = labels[:, 1] = 1
    module = ClassifierModule(DoubleMnistCNN(), "multi_label", ADAM, defense=PGDTraining(eps=0.1, steps=2, step_size=0.05))
    trainer = _fast_dev_run(module, torch.rand(8, 1, 64, 64), labels)
    assert "train/exact_set_acc" in trainer.callback_metrics


def test_fast_dev_run_c2f():
    model = C2FClassifier(cifar10_hierarchy(), lambda n: SmallVGG(n, widths=(4, 4, 4, 4, 4), hidden=8))
    module = ClassifierModule(model, "c2f", ADAM)
    trainer = _fast_dev_run(module, torch.rand(8, 3, 32, 32), torch.arange(8) % 10)
    assert {"train/coarse_acc", "train/fine_acc", "train/fine_acc_given_coarse"} <= set(trainer.callback_metrics)


def test_random_rectangle_blacks_out_one_box_of_allowed_size():
    images = torch.ones(16, 1, 64, 64)
    out = RandomRectangle(min_size=4, max_size=10, seed=0)(None, images, None, None)
    zeros = out[:, 0] == 0
    rows = zeros.any(dim=2).sum(dim=1)
    cols = zeros.any(dim=1).sum(dim=1)
    assert ((rows >= 4) & (rows <= 10) & (cols >= 4) & (cols <= 10)).all()
    assert torch.equal(zeros.sum(dim=(1, 2)), rows * cols)  # a filled rectangle


def test_pgd_training_batch_stays_in_eps_ball():
    torch.manual_seed(0)
    model = DoubleMnistCNN()
    images = torch.rand(4, 1, 64, 64)
    labels = torch.zeros(4, 10)
    labels[:, :2] = 1
    defense = PGDTraining(eps=0.05, steps=3, step_size=0.02)
    adversarial = defense(model, images, labels, lambda logits, y: per_sample_loss("multi_label", logits, y))
    assert (adversarial - images).abs().max() <= 0.05 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"eps": 2.0}, {"steps": 0}, {"fraction": 0.0}])
def test_pgd_training_rejects_bad_values_naming_the_real_key(kwargs):
    from robex.utils.errors import RobexError

    with pytest.raises(RobexError, match=rf"defense\.obj\.{next(iter(kwargs))}="):
        PGDTraining(**kwargs)


def test_multilabel_metrics_on_known_case():
    logits = torch.tensor([[5.0, 4.0, 0, 0], [5.0, 0, 4.0, 0]])
    targets = torch.tensor([[1.0, 1, 0, 0], [1.0, 1, 0, 0]])
    metrics = multilabel_metrics(logits, targets)
    assert metrics["exact_set_acc"] == 0.5
    assert metrics["per_label_acc"] == pytest.approx(6 / 8)


def test_multilabel_and_single_label_metrics_match_a_per_sample_reference():
    """torchmetrics (micro averages) against the definitions written out sample by sample."""
    from robex.training.tasks import accuracy

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 10, generator=generator)
    targets = torch.zeros(50, 10)
    for row in range(50):
        targets[row, torch.randperm(10, generator=generator)[:2]] = 1
    targets[:10] = torch.zeros(10, 10).scatter_(1, logits[:10].topk(2, dim=1).indices, 1.0)  # some exact hits
    metrics = multilabel_metrics(logits, targets)
    top2 = [set(logits[i].topk(2).indices.tolist()) for i in range(50)]
    truth = [set(torch.nonzero(targets[i]).flatten().tolist()) for i in range(50)]
    assert metrics["exact_set_acc"].item() == pytest.approx(sum(p == t for p, t in zip(top2, truth)) / 50)
    right = sum((j in p) == (j in t) for p, t in zip(top2, truth) for j in range(10))
    assert metrics["per_label_acc"].item() == pytest.approx(right / 500)
    labels = torch.randint(0, 10, (50,), generator=generator)
    labels[:7] = logits[:7].argmax(dim=1)
    assert accuracy(logits, labels).item() == pytest.approx(sum(int(logits[i].argmax() == labels[i]) for i in range(50)) / 50)


def test_augment_crops_and_flips_and_keeps_range():
    """A unique, asymmetric pattern: every output must be a padded shift and/or a mirror of its
    input (a crop of the zero-padded image), and over 32 images both flips and shifts occur; the
    identity (or a wrong axis) fails."""
    import torch.nn.functional as F

    images = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32).div(32 * 32).expand(32, 3, 32, 32).clone()
    out = Augment(padding=4, seed=1)(images)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    padded = F.pad(images[:1], [4] * 4)[0]
    flipped, shifted = 0, 0
    for image in out:
        candidates = [(flip, dy, dx) for flip in (False, True) for dy in range(9) for dx in range(9)
                      if torch.equal((padded.flip(-1) if flip else padded)[:, dy:dy + 32, dx:dx + 32], image)]
        assert candidates, "an output that is no crop/flip of its padded input"
        flip, dy, dx = candidates[0]
        flipped += flip
        shifted += (dy, dx) != (4, 4)
    assert 0 < flipped < 32 and shifted > 16
