from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import real_data_root
from robex.data.cifar10 import load_cifar10, prepare_cifar10, read_cifar10
from robex.data.double_mnist import DoubleMnistSplit, generate_double_mnist, prepare_double_mnist
from robex.data.hierarchy import CIFAR10_CLASSES, cifar10_hierarchy
from robex.utils.errors import RobexError


def test_masks_cover_exactly_the_digit_pixels(digit_pool):
    images, labels = digit_pool
    split = generate_double_mnist(images, labels, 50, seed=3)
    canvas = split.images[:, 0]
    union = split.masks[:, 0] | split.masks[:, 1]
    assert torch.equal(canvas > 0, union)
    assert not (split.masks[:, 0] & split.masks[:, 1]).any()
    # each digit's mask stays in its own half of the canvas
    assert not split.masks[:, 0, :, 32:].any() and not split.masks[:, 1, :, :32].any()
    # every mask holds exactly the pixels of the source digit placed at its offset
    for i in range(5):
        for slot in range(2):
            y, x = split.offsets[i, slot].tolist()
            patch = canvas[i, y : y + 28, x : x + 28]
            assert split.masks[i, slot].sum() == (patch > 0).sum()


def test_two_different_digits_and_two_hot_labels(digit_pool):
    split = generate_double_mnist(*digit_pool, 200, seed=0)
    assert (split.digits[:, 0] != split.digits[:, 1]).all()
    two_hot = split.two_hot()
    assert torch.equal(two_hot.sum(1), torch.full((200,), 2.0))
    assert two_hot.gather(1, split.digits).eq(1).all()


def test_generation_is_deterministic(digit_pool):
    a = generate_double_mnist(*digit_pool, 40, seed=7)
    b = generate_double_mnist(*digit_pool, 40, seed=7)
    c = generate_double_mnist(*digit_pool, 40, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)


def test_offsets_respect_configured_ranges(digit_pool):
    split = generate_double_mnist(*digit_pool, 300, seed=1)
    ys, xs = split.offsets[..., 0], split.offsets[..., 1]
    assert ys.min() >= 0 and ys.max() < 36
    assert xs[:, 0].max() < 4 and xs[:, 1].min() >= 32 and xs[:, 1].max() < 36


def test_save_load_roundtrip(tmp_path, digit_pool):
    split = generate_double_mnist(*digit_pool, 20, seed=2, mask_threshold=100)
    split.save(tmp_path / "s.pt")
    loaded = DoubleMnistSplit.load(tmp_path / "s.pt")
    assert torch.equal(loaded.masks, split.masks) and torch.equal(loaded.images, split.images)
    assert loaded.meta["mask_threshold"] == 100


def test_bad_geometry_is_rejected(digit_pool):
    with pytest.raises(RobexError, match="lower the offsets"):
        generate_double_mnist(*digit_pool, 4, seed=0, max_offset_x=8)


@pytest.mark.skipif(real_data_root() is None, reason="real MNIST not available (set ROBEX_DATA)")
def test_prepare_double_mnist_on_real_mnist(tmp_path):
    paths = prepare_double_mnist(real_data_root(), tmp_path / "cache", tmp_path / "out", 30, 10, 10, seed=0)
    test = DoubleMnistSplit.load(paths["test"])
    assert test.images.shape == (10, 1, 64, 64) and test.images.dtype == torch.uint8
    assert (test.digits[:, 0] != test.digits[:, 1]).all()
    assert torch.equal(test.images[:, 0] > 0, test.masks.any(dim=1))


def _write_tiny_cifar_tree(root: Path, per_class: int = 2, classes=CIFAR10_CLASSES) -> None:
    """PNG images whose top-left red value encodes the class they were written for (25 * index + k)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in reversed(classes):  # creation order must not matter
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                pixels[0, 0, 0] = 25 * CIFAR10_CLASSES.index(name) + k
                Image.fromarray(pixels).save(folder / f"{k}.png")


def _true_labels(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0] // 25).tolist()


def test_cifar10_from_image_folder_keeps_torchvision_label_order(tmp_path):
    """Each image's label must be the torchvision index of ITS folder's class (not a multiset match:
    a mapping that permutes the classes passes a multiset check)."""
    _write_tiny_cifar_tree(tmp_path / "cifar10")
    images, labels = read_cifar10(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == _true_labels(images)
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)
    written = prepare_cifar10(tmp_path, tmp_path / "prepared", num_train=5, seed=0)
    cached, cached_labels = load_cifar10(tmp_path / "prepared", "train")
    assert len(cached) == 5 and written["test"].is_file()
    assert cached_labels.tolist() == _true_labels(cached)  # the subset keeps image and label together


def test_cifar10_image_folder_with_some_classes_keeps_the_global_indices(tmp_path):
    """ImageFolder numbers the folders it finds 0, 1, ...; with only cat/ and truck/ present the labels
    must still be CIFAR-10's 3 and 9 (an identity class->index mapping gives 0 and 1)."""
    _write_tiny_cifar_tree(tmp_path / "cifar10", per_class=3, classes=("truck", "cat"))
    images, labels = read_cifar10(tmp_path, "test")
    assert labels.tolist() == _true_labels(images) and set(labels.tolist()) == {3, 9}


@pytest.mark.skipif(real_data_root() is None or not (real_data_root() / "cifar10" / "test").is_dir(), reason="real CIFAR-10 folders not available")
def test_real_cifar10_folder_labels_follow_the_folder_names(tmp_path):
    """On the real image folders: a few images of each class come back with that class's index."""
    source = real_data_root() / "cifar10" / "test"
    for name in CIFAR10_CLASSES:
        (tmp_path / "cifar10" / "test" / name).mkdir(parents=True)
        for path in sorted((source / name).iterdir())[:2]:
            (tmp_path / "cifar10" / "test" / name / path.name).symlink_to(path)
    images, labels = read_cifar10(tmp_path, "test")
    assert labels.tolist() == [index for index in range(10) for _ in range(2)]
    assert not torch.equal(images[0], images[2])


def test_cifar10_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10"):
        read_cifar10(tmp_path, "train", source="imagefolder")


def test_cifar10_hierarchy():
    h = cifar10_hierarchy()
    assert h.counts() == {"vehicle": 4, "animal": 6}
    assert [CIFAR10_CLASSES[f] for f in h.members(0)] == ["airplane", "automobile", "ship", "truck"]
    fine = torch.tensor([0, 8, 2, 9])
    assert h.coarse_of(fine).tolist() == [0, 0, 1, 0]
    assert h.local_index(fine).tolist() == [0, 2, 0, 3]


def test_corrupt_prepared_files_name_the_path(tmp_path):
    """A truncated cache is a user error (one sentence naming the file), not an UnpicklingError traceback."""
    (tmp_path / "test.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(RobexError, match="test.pt' is corrupt"):
        DoubleMnistSplit.load(tmp_path / "test.pt")
    with pytest.raises(RobexError, match="test.pt' is corrupt"):
        load_cifar10(tmp_path, "test")
