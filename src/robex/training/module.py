"""One LightningModule for all task families; the model and the defense are injected."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from robex.attacks.pgd import PGD
from robex.data.hierarchy import Hierarchy
from robex.training.augment import Augment
from robex.training.defenses import Defense, NoDefense, _never_done
from robex.training.tasks import Task, accuracy, c2f_loss_and_metrics, multilabel_metrics, per_sample_loss
from robex.utils.errors import RobexError


class ClassifierModule(L.LightningModule):
    """Trains ``model`` on ``task``; logs loss and accuracy per epoch under train/ val/ test/.

    ``robust_eval`` (an L-inf eps, or None) adds PGD-attacked accuracy to the test metrics, so a
    PGD-trained model reports clean and attacked accuracy side by side.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task | str,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        defense: Defense | None = None,
        augment: Augment | None = None,
        hierarchy: Hierarchy | None = None,
        robust_eval: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = Task(task)
        if self.task == Task.c2f and hierarchy is None:
            hierarchy = getattr(model, "hierarchy", None)
            if hierarchy is None:
                raise RobexError("the c2f task needs a C2FClassifier model (model=c2f_*)")
        self.hierarchy = hierarchy
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.defense = defense or NoDefense()
        self.augment = augment
        self.robust_eval = robust_eval
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "defense", "augment", "hierarchy"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss_per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(self.task, logits, targets)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, targets = batch
        if stage == "train":
            if self.augment is not None:
                images = self.augment(images)
            images = self.defense(self.model, images, targets, self.loss_per_sample)
        if self.task == Task.c2f:
            loss, metrics = c2f_loss_and_metrics(self.model, images, targets, self.hierarchy)
        else:
            logits = self.model(images)
            loss = self.loss_per_sample(logits, targets).mean()
            if self.task == Task.multi_label:
                metrics = multilabel_metrics(logits, targets)
            else:
                metrics = {"acc": accuracy(logits, targets)}
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(images))
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("acc", "exact_set_acc", "fine_acc"), on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def on_train_epoch_start(self) -> None:
        self.defense.set_epoch(self.current_epoch)  # e.g. the PGD defense's warm-up / eps ramp

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")
        if self.robust_eval:
            self._robust_step(batch)

    def _robust_step(self, batch) -> None:
        images, targets = batch
        eps = float(self.robust_eval["eps"])
        steps = int(self.robust_eval.get("steps", 20))
        attack = PGD(self.model, eps=eps, steps=steps, step_size=float(self.robust_eval.get("step_size", 2.5 * eps / steps)),
                     loss_fn=self.loss_per_sample, success_fn=_never_done, generator=torch.Generator().manual_seed(0))
        with torch.enable_grad(), torch.inference_mode(False):
            adversarial = attack(images.clone(), targets.clone()).adversarial
        with torch.no_grad():
            logits = self.model(adversarial)
        if self.task == Task.multi_label:
            robust, name = multilabel_metrics(logits, targets)["exact_set_acc"], "test/pgd_exact_set_acc"
        else:
            robust, name = accuracy(logits, targets), "test/pgd_acc"
        self.log(name, robust, on_step=False, on_epoch=True, batch_size=len(images))

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

