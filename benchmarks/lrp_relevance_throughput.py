"""LRP relevance throughput (images/s) and peak memory per rule, BatchNorm treatment and batch size.

    OMP_NUM_THREADS=1 python benchmarks/lrp_relevance_throughput.py --batch-sizes 8 32 --images 64
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from robex.lrp.attribution import LRPAttribution, paper_rules
from robex.models.cifar_cnn import CifarCNN
from robex.models.io import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outputs/train/cifar_cnn/model.pt")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--batchnorm", nargs="+", default=["layer", "merge"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    trained = Path(args.model).is_file()
    model = load_model(args.model, args.device) if trained else CifarCNN().to(args.device).eval()
    images = torch.rand(args.images, 3, 32, 32, device=args.device)
    classes = torch.randint(0, 10, (args.images,), device=args.device)
    rows = []
    for rule, batchnorm in [(rule, batchnorm) for rule in paper_rules() for batchnorm in args.batchnorm]:
        with LRPAttribution(model, rule, batchnorm=batchnorm, relevance_init="logit") as explain:
            explain(images[:2], classes[:2])  # warm-up: hooks, canonizer, allocator
            for batch_size in args.batch_sizes:
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    torch.cuda.synchronize()
                began = time.perf_counter()
                for start in range(0, args.images, batch_size):
                    explain(images[start : start + batch_size], classes[start : start + batch_size])
                if args.device == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - began
                row = {"rule": rule.name, "batchnorm": batchnorm, "batch_size": batch_size, "images_per_second": args.images / seconds}
                if args.device == "cuda":
                    row["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
                rows.append(row)
    print(json.dumps({
        "model": args.model if trained else "random CifarCNN (same cost as trained)",
        "device": args.device, "torch_threads": torch.get_num_threads(), "images": args.images,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
