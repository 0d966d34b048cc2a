"""The shipped ImageNet C2F mapping, the script that derives it from WordNet 3.0, and the image-folder data path."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
from PIL import Image

from robex.data.hierarchy import imagenet_hierarchy
from robex.data.imagenet import WnidImageFolder, first_image_per_class, imagenet_transform
from robex.utils.errors import RobexError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "derive_imagenet_c2f.py"
CLASS_INDEX = Path("/work/shared/data/imagenet/imagenet_class_index.json")
WORDNET_DIR = Path("/usr/share/wordnet")
PAPER_COARSE = ["fish", "bird", "reptile", "clothes", "food", "vehicle", "electrical_device", "dog"]


def shipped_mapping() -> dict:
    return json.loads(resources.files("robex.data.resources").joinpath("imagenet_c2f.json").read_text())


def load_script():
    spec = importlib.util.spec_from_file_location("derive_imagenet_c2f", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_shipped_mapping_loads_with_the_paper_coarse_classes():
    hierarchy = imagenet_hierarchy()
    mapping = shipped_mapping()
    assert list(hierarchy.coarse_names) == PAPER_COARSE
    assert hierarchy.num_coarse == 8
    counts = hierarchy.counts()
    assert counts == {name: mapping["counts"][name] for name in PAPER_COARSE}
    assert sum(counts.values()) == mapping["counts"]["total"] == hierarchy.num_fine == len(mapping["fine_classes"])
    assert all(count > 0 for count in counts.values())
    # The fine indices each coarse classifier sees are contiguous 0..M_i-1.
    for coarse in range(hierarchy.num_coarse):
        members = hierarchy.members_tensor(coarse)
        assert torch.equal(hierarchy.local_index(members), torch.arange(len(members)))
        assert torch.all(hierarchy.coarse_of(members) == coarse)


def test_shipped_mapping_matches_the_imagenet_class_index():
    mapping = shipped_mapping()
    entries = mapping["fine_classes"]
    wnids = [e["wnid"] for e in entries]
    assert len(set(wnids)) == len(wnids)
    assert len({e["imagenet_index"] for e in entries}) == len(entries)
    assert [e["imagenet_index"] for e in entries] == sorted(e["imagenet_index"] for e in entries)
    if CLASS_INDEX.is_file():
        class_index = json.loads(CLASS_INDEX.read_text())
        for entry in entries:
            assert class_index[str(entry["imagenet_index"])] == [entry["wnid"], entry["name"]]
    synset_names = {coarse: {s["synset"] for s in synsets} for coarse, synsets in mapping["wordnet_synsets"].items()}
    assert set(synset_names) == set(PAPER_COARSE)
    for coarse, synsets in mapping["wordnet_synsets"].items():
        assert all(s["wnid"] == f"n{s['offset']:08d}" for s in synsets)
    for entry in entries:
        assert entry["coarse"] in PAPER_COARSE
        assert set(entry["via"]) <= synset_names[entry["coarse"]]
    # Spot checks against well-known ImageNet classes.
    by_wnid = {e["wnid"]: e["coarse"] for e in entries}
    assert by_wnid["n01440764"] == "fish"  # tench
    assert by_wnid["n01484850"] == "fish"  # great white shark
    assert by_wnid["n02085620"] == "dog"  # Chihuahua
    assert by_wnid["n02814533"] == "vehicle"  # beach wagon
    assert by_wnid["n07753592"] == "food"  # banana
    assert "n02123045" not in by_wnid  # tabby cat is in none of the 8 coarse classes


@pytest.mark.skipif(not (WORDNET_DIR / "data.noun").is_file(), reason="WordNet 3.0 not installed (apt-get install -y wordnet-base)")
@pytest.mark.skipif(not CLASS_INDEX.is_file(), reason=f"ImageNet class index {CLASS_INDEX} not available")
def test_derivation_script_reproduces_the_shipped_file(tmp_path):
    out = tmp_path / "imagenet_c2f.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--wordnet", str(WORDNET_DIR), "--class-index", str(CLASS_INDEX), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    shipped = resources.files("robex.data.resources").joinpath("imagenet_c2f.json").read_text()
    assert out.read_text() == shipped


def test_derivation_script_fails_clearly_without_wordnet(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--wordnet", str(tmp_path / "no_wordnet"), "--class-index", str(tmp_path / "x.json"), "--out", str(tmp_path / "out.json")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "no_wordnet/data.noun" in message and "wordnet-base" in message
    assert not (tmp_path / "out.json").exists()


def write_fake_wordnet(directory: Path, synsets: dict[str, tuple[list[tuple[str, str]], str]]) -> dict[str, int]:
    """A data.noun/index.noun pair in wndb(5) format: name -> ([(pointer symbol, target name)], gloss).

    Offsets are zero-padded to 8 digits, so line lengths do not depend on them: lay out with
    placeholders first, then fill in the real byte offsets.
    """
    def line(name, offsets):
        pointers, gloss = synsets[name]
        pointer_text = " ".join(f"{symbol} {offsets[target]:08d} n 0000" for symbol, target in pointers)
        return f"{offsets[name]:08d} 06 n 01 {name} 0 {len(pointers):03d} {pointer_text} | {gloss}\n".replace("  ", " ")

    header = "  1 fake licence header\n"
    placeholder = dict.fromkeys(synsets, 0)
    offsets, position = {}, len(header)
    for name in synsets:
        offsets[name] = position
        position += len(line(name, placeholder).encode())
    (directory / "data.noun").write_text(header + "".join(line(name, offsets) for name in synsets))
    (directory / "index.noun").write_text(header + "".join(f"{name} n 1 0 1 0 {offsets[name]:08d}\n" for name in sorted(synsets)))
    return offsets


def test_precedence_and_instance_hypernyms_on_a_synthetic_wordnet(tmp_path, monkeypatch):
    script = load_script()
    offsets = write_fake_wordnet(tmp_path, {
        "entity": ([], "root"),
        "clothing": ([("@", "entity")], "worn"),
        "electronic_device": ([("@", "entity")], "electronic"),
        "headset": ([("@", "clothing"), ("@", "electronic_device")], "worn and electronic"),
        "walkman": ([("@i", "electronic_device")], "instance of an electronic device"),
        "rock": ([("@", "entity")], "neither"),
    })
    monkeypatch.setattr(script, "COARSE_SYNSETS", {
        "electrical_device": (script.SynsetRef("electronic_device", 1, offsets["electronic_device"]),),
        "clothes": (script.SynsetRef("clothing", 1, offsets["clothing"]),),
    })
    monkeypatch.setattr(script, "PRECEDENCE", ("clothes", "electrical_device"))
    class_index = [(0, f"n{offsets['headset']:08d}", "headset"), (1, f"n{offsets['walkman']:08d}", "walkman"), (2, f"n{offsets['rock']:08d}", "rock")]
    mapping = script.derive_mapping(script.WordNetNouns(tmp_path), class_index, "fake.json")
    assert mapping["coarse_classes"] == ["electrical_device", "clothes"]
    assert [(e["name"], e["coarse"], e.get("also_under")) for e in mapping["fine_classes"]] == [
        ("headset", "clothes", ["electrical_device"]),
        ("walkman", "electrical_device", None),
    ]
    assert mapping["counts"] == {"electrical_device": 1, "clothes": 1, "total": 2}
    # A wnid whose digits are not a synset's byte offset means the WordNet is not 3.0.
    with pytest.raises(script.WordNetError, match="no synset at byte offset"):
        script.derive_mapping(script.WordNetNouns(tmp_path), [(0, "n00000003", "bogus")], "fake.json")


def make_image_tree(split_dir: Path, wnids: list[str], images_per_class: int) -> None:
    for class_number, wnid in enumerate(wnids):
        (split_dir / wnid).mkdir(parents=True)
        for image_number in range(images_per_class):
            colour = (class_number * 13 % 256, image_number * 40 % 256, 200)
            Image.new("RGB", (12, 10), colour).save(split_dir / wnid / f"{wnid}_{image_number}.JPEG")


def test_wnid_image_folder_on_a_synthetic_c2f_tree(tmp_path):
    hierarchy = imagenet_hierarchy()
    # Two fine classes per coarse class, plus one ImageNet class outside the hierarchy that must be ignored.
    chosen = [f for c in range(hierarchy.num_coarse) for f in hierarchy.members(c)[:2]]
    wnids = [hierarchy.fine_ids[f] for f in chosen]
    make_image_tree(tmp_path / "train", wnids + ["n02123045"], images_per_class=2)

    dataset = WnidImageFolder(tmp_path / "train", wnids, transform=imagenet_transform(image_size=8, resize=9))
    assert len(dataset) == 2 * len(wnids)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    batch = torch.stack(images)
    assert batch.shape == (len(dataset), 3, 8, 8)
    assert batch.min() >= 0 and batch.max() <= 1
    labels = torch.tensor(labels)
    assert sorted(labels.tolist()) == sorted(list(range(len(wnids))) * 2)
    # Each sample's label is its wnid's position; through the hierarchy that gives its coarse class.
    for (path, label) in dataset.samples:
        assert Path(path).parent.name == wnids[label]
    coarse = hierarchy.coarse_of(torch.tensor(chosen)[labels])
    assert torch.equal(torch.bincount(coarse, minlength=8), torch.full((8,), 4))

    first = first_image_per_class(dataset)
    assert [dataset.samples[i][1] for i in first.indices] == list(range(len(wnids)))


def test_wnid_image_folder_names_missing_class_folders(tmp_path):
    hierarchy = imagenet_hierarchy()
    present = list(hierarchy.fine_ids[:3])
    make_image_tree(tmp_path / "val", present, images_per_class=1)
    with pytest.raises(RobexError, match=rf"lacks {hierarchy.num_fine - 3} of the {hierarchy.num_fine} expected class folders \({hierarchy.fine_ids[3]}"):
        WnidImageFolder(tmp_path / "val", hierarchy.fine_ids)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WnidImageFolder(tmp_path / "test", present)
