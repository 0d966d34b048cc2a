"""Why is "identical top-1" (paper 001, Table 5) several times the paper's 3.75 %? Its share by perturbation size.

Reads a finished LRP study's attack output (originals, successful L-BFGS adversarials, their
targets), recomputes the alpha = 1 maps exactly as the study's relevance step does (initial
relevance = the explained class' logit, max-abs normalised, both BatchNorm treatments), and splits
the pairs whose original top-1 component is also the adversarial's top-1 by the quartiles of the
perturbation's L2 norm and by the adversarial's target probability. Also: the share where the top-1
is the same pixel in any colour channel, and how flat the originals' maps are at the top (second
largest over largest score). Prints JSON (and writes it with --out).

    OMP_NUM_THREADS=1 python benchmarks/lrp_identical_top1.py --study outputs/reference/lrp_study/medium \
        --model outputs/reference/train/cifar_cnn/model.pt --out docs/benchmarks/lrp_identical_top1.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _report import emit

from robex.lrp.attribution import LRPAttribution, LRPRule, max_abs_normalize
from robex.lrp.ranking import ranks
from robex.models.io import load_model


def maps(model, rule: LRPRule, images: torch.Tensor, classes: torch.Tensor, batchnorm: str, batch: int = 200) -> torch.Tensor:
    attribution = LRPAttribution(model, rule, batchnorm=batchnorm, zplus_bias="include", relevance_init="logit")
    with attribution:
        return torch.cat([max_abs_normalize(attribution(images[i : i + batch], classes[i : i + batch])[1]) for i in range(0, len(images), batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="outputs/reference/lrp_study/medium", type=Path)
    parser.add_argument("--model", default="outputs/reference/train/cifar_cnn/model.pt")
    parser.add_argument("--batchnorm", nargs="+", default=["layer", "merge"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = load_model(args.model, "cpu")
    attack = torch.load(args.study / "attack" / "adversarials.pt", weights_only=False)
    pairs = attack["adversarial_pairs"]
    pair_original, pair_target = attack["pair_original"][pairs], attack["pair_target"][pairs]
    originals = attack["originals"].float() / 255
    adversarials = attack["adversarials"]
    target_probability = attack["pair_target_probability"][pairs]
    l2 = (adversarials - originals[pair_original]).flatten(1).norm(dim=1)
    edges = torch.quantile(l2, torch.tensor([0.25, 0.5, 0.75]))
    quartile = torch.bucketize(l2, edges)
    rule = LRPRule(name="alpha_beta_1", kind="alpha_beta", alpha=1.0)
    components_per_channel = originals[0, 0].numel()

    report = {"command": "python " + " ".join(sys.argv), "study": str(args.study), "model": args.model, "pairs": len(pairs),
              "l2_quartile_edges": [round(float(e), 4) for e in edges], "treatments": {}}
    for batchnorm in args.batchnorm:
        original_maps = maps(model, rule, originals, attack["labels"], batchnorm)
        adversarial_maps = maps(model, rule, adversarials, pair_target, batchnorm)
        original_order, _ = ranks(original_maps, "value")
        adversarial_order, adversarial_rank = ranks(adversarial_maps, "value")
        top1 = original_order[pair_original, 0]
        identical = adversarial_rank.gather(1, top1.view(-1, 1)).squeeze(1) == 0
        same_pixel = (adversarial_order[:, 0] % components_per_channel) == (top1 % components_per_channel)
        top_scores = original_maps.flatten(1).topk(2, dim=1).values
        confident = target_probability > 0.99
        report["treatments"][batchnorm] = {
            "identical_top1": round(float(identical.float().mean()), 4),  # equals the study's Table 5 share
            "identical_top1_by_l2_quartile": [round(float(identical[quartile == q].float().mean()), 4) for q in range(4)],
            "identical_top1_target_probability_at_most_0.99": round(float(identical[~confident].float().mean()), 4),
            "identical_top1_target_probability_above_0.99": round(float(identical[confident].float().mean()), 4),
            "same_top1_pixel_any_channel": round(float(same_pixel.float().mean()), 4),
            "original_second_over_first_score_median": round(float((top_scores[:, 1] / top_scores[:, 0]).median()), 4),
        }
    emit(report, args.out)


if __name__ == "__main__":
    main()
