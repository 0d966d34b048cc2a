"""A stopped LRP study loses at most one batch: attack batches and relevance parts are reused by a
rerun with the same inputs (and only then); the progress bars move per finished pair / map."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robex.attacks.lbfgs import LBFGS
from robex.lrp import study
from robex.lrp.attribution import LRPRule


class _CountingAttack:
    """Deterministic fake L-BFGS result; remembers how many pairs it was asked to attack."""

    def __init__(self, shift: float = 0.01) -> None:
        self.calls, self.shift = [], shift

    def __call__(self, images, targets):
        self.calls.append(len(targets))
        success = targets % 2 == 0
        return SimpleNamespace(adversarial=(images + self.shift).clamp(0, 1), success=success, target_probability=targets.float() / 10,
                               iterations=torch.ones_like(targets), c=torch.ones(len(targets)), distance=torch.full((len(targets),), 4.0))


def _originals(count: int = 4):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 3, 4, 4), dtype=torch.uint8, generator=generator), torch.tensor([1, 2, 0, 3])[:count]


def test_attack_batches_are_reused_only_when_their_key_matches(tmp_path):
    originals, labels = _originals()
    first = _CountingAttack()
    payload, _ = study.attack_all_pairs(first, originals, labels, 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="a")
    assert first.calls == [6, 6] and not payload["pair_resumed"].any()

    again = _CountingAttack()
    resumed, seconds = study.attack_all_pairs(again, originals, labels, 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="a")
    assert again.calls == [] and resumed["pair_resumed"].all() and seconds >= 0
    for key in ("pair_target", "pair_success", "pair_target_probability", "adversarial_pairs", "adversarials", "pair_distance"):
        assert torch.equal(resumed[key], payload[key]), key

    # a prefix of the originals (a smaller lrp.num_images) reuses the first batch only
    prefix = _CountingAttack()
    part, _ = study.attack_all_pairs(prefix, originals[:2], labels[:2], 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="a")
    assert prefix.calls == [] and len(part["pair_target"]) == 6

    # other pixels or other attack settings (fingerprint): attacked again, never a stale batch
    edited = originals.clone()
    edited[3, 0, 0, 0] ^= 1
    pixels = _CountingAttack()
    study.attack_all_pairs(pixels, edited, labels, 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="a")
    assert pixels.calls == [6]  # the batch holding original 3 only
    other = _CountingAttack(shift=0.02)
    changed, _ = study.attack_all_pairs(other, originals, labels, 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="b")
    assert other.calls == [6, 6] and not torch.equal(changed["adversarials"], payload["adversarials"])

    # a half-written batch file is attacked again rather than crashing the run
    broken = sorted(tmp_path.glob("pairs_*.pt"))[0]
    broken.write_bytes(b"not a torch file")
    repair = _CountingAttack()
    study.attack_all_pairs(repair, originals, labels, 4, 6, torch.device("cpu"), checkpoint_dir=tmp_path, fingerprint="b")
    assert repair.calls == [6]


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 4)).eval()


class _RecordingBar:
    def __init__(self) -> None:
        self.updates, self.n = [], 0

    def update(self, count=1):
        self.updates.append(count)
        self.n += count

    def set_postfix(self, **_):
        pass


def test_lbfgs_advances_a_shared_bar_pair_by_pair():
    model = _tiny_model()
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = (model(images).argmax(1) + 1) % 4
    targets[0] = model(images[:1]).argmax(1)  # already the target: counted without an attack
    bar = _RecordingBar()
    bar.n = 7  # a bar shared with earlier batches
    LBFGS(model, maxiter=20, tolerance=1e-2, initial_ce_weight=0.01, max_bisections=1)(images, targets, progress=bar)
    assert bar.n == 7 + 5
    # per finished pair, not once per batch: a batch-level update would be the single step [5]
    assert len([u for u in bar.updates if u > 0]) >= 2 and max(bar.updates) < 5


def test_relevance_parts_are_reused_and_equal_a_fresh_run(tmp_path, monkeypatch):
    model = _tiny_model()
    originals = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = model(originals.float() / 255).argmax(1)
    attack = LBFGS(model, maxiter=15, tolerance=1e-2, initial_ce_weight=0.01, max_bisections=1)
    payload, _ = study.attack_all_pairs(attack, originals, labels, 4, 9, torch.device("cpu"))
    payload["image_indices"] = torch.arange(3)
    rules = [LRPRule("lrp0", "lrp0"), LRPRule("alpha_beta_1", "alpha_beta", alpha=1.0)]
    options = dict(batch_size=2, batchnorm=("merge",), heatmap_examples=1)
    fresh = study.relevance_statistics(model, rules, payload, torch.device("cpu"), **options)
    saved = study.relevance_statistics(model, rules, payload, torch.device("cpu"), checkpoint_dir=tmp_path, **options)
    assert sorted(p.name for p in (tmp_path / "merge").iterdir()) == ["alpha_beta_1.pt", "lrp0.pt"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("a saved relevance part was computed again")

    monkeypatch.setattr(study, "_relevance_one_rule", must_not_run)
    reused = study.relevance_statistics(model, rules, payload, torch.device("cpu"), checkpoint_dir=tmp_path, **options)
    for result in (saved, reused):
        for rule in ("lrp0", "alpha_beta_1"):
            for kind in ("original", "adversarial"):
                assert torch.equal(result["distributions"]["merge"][rule][kind]["histogram"], fresh["distributions"]["merge"][rule][kind]["histogram"])
    # other options (here the ranking fraction) must not reuse the parts
    with pytest.raises(AssertionError, match="computed again"):
        study.relevance_statistics(model, rules, payload, torch.device("cpu"), checkpoint_dir=tmp_path, small_fraction=0.02, **options)
