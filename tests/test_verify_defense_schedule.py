"""The PGD defense's warm-up / eps-ramp schedule (used to train the PGD thesis CNN the verifier compares)."""

import functools

import lightning as L
import torch
from torch import nn

from robex.data.datamodules import tensor_datamodule
from robex.training.defenses import PGDTraining
from robex.training.module import ClassifierModule


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def _loss(logits, labels):
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def test_warmup_is_clean_then_eps_ramps_linearly_to_its_value():
    model = _linear_model()
    images, labels = torch.rand(6, 1, 4, 4) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0, 1, 2])
    defense = PGDTraining(eps=0.1, steps=5, step_size=0.05, fraction=1.0, warmup_epochs=2, ramp_epochs=4)
    reached = []
    for epoch in range(8):
        defense.set_epoch(epoch)
        out = defense(model, images, labels, _loss)
        reached.append(float((out - images).abs().max()))
    assert reached[0] == reached[1] == 0.0  # warm-up: the clean batch itself
    # a linear model's PGD (sign steps, step >= eps/steps) ends on the ball's surface: max |delta| = eps * scale
    expected = [0.0, 0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    assert all(abs(r - e) < 1e-6 for r, e in zip(reached, expected)), reached


def test_default_schedule_is_madrys_constant_eps():
    model = _linear_model()
    images, labels = torch.rand(4, 1, 4, 4) * 0.5 + 0.25, torch.tensor([0, 1, 2, 0])
    defense = PGDTraining(eps=0.1, steps=5, step_size=0.05)
    out = defense(model, images, labels, _loss)
    assert abs(float((out - images).abs().max()) - 0.1) < 1e-6


class _RecordingDefense(PGDTraining):
    def __init__(self):
        super().__init__(eps=0.1, steps=1, step_size=0.1, warmup_epochs=5)
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.epochs_seen.append(epoch)


def test_training_module_tells_the_defense_each_epoch():
    defense = _RecordingDefense()
    module = ClassifierModule(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), "single_label", functools.partial(torch.optim.Adam, lr=1e-3), defense=defense)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=tensor_datamodule(torch.rand(8, 1, 4, 4), torch.arange(8) % 3, batch_size=4))
    assert defense.epochs_seen == [0, 1, 2]
