#!/usr/bin/python3
"""Training and inference throughput of the reference CNN, PyTorch against convgemm-train, side by side in one run.

Trains conv32k3-relu-maxpool2-conv64k3-relu-maxpool2-flatten-dense128-relu-dense10 on Fashion-MNIST with the
reference recipe (batch 64, SGD lr 0.05 momentum 0.9, no weight decay, constant rate) in PyTorch (2 threads) and in
convgemm-train (--threads 2, --init torch: PyTorch's default initialisation, so that the two start from the same
distribution of weights), then times inference over the 10,000 test images at batch 1000 in both, and prints
images/s, test accuracy and the ratios. Default: one epoch, seed 1 (the throughput comparison). With --epochs 10
--seeds 1,2,3,4,5 it is the accuracy comparison of the recipe: one run per seed in each framework, then the mean
and standard deviation of the final test accuracy. Run with Debian's /usr/bin/python3 (python3-torch,
python3-numpy); without torch it says so and exits 0.

Usage: perf/train_vs_pytorch.py [--train build/tools/convgemm-train] [--data DIR] [--threads 2] [--limit N]
                                [--epochs 1] [--seeds 1]
"""
import argparse
import gzip
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_SPEC = "conv32k3,relu,maxpool2,conv64k3,relu,maxpool2,flatten,dense128,relu,dense10"


def read_idx(path):
    """An unsigned-byte IDX file (gzipped) as a numpy array: big-endian sizes after a 4-byte magic."""
    import numpy as np
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def pytorch(args, seed):
    import torch
    from torch import nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)

    def load(prefix):
        images = read_idx(os.path.join(args.data, prefix + "-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(args.data, prefix + "-labels-idx1-ubyte.gz"))
        return (torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1),
                torch.from_numpy(labels.copy()).long())

    train_x, train_y = load("train")
    test_x, test_y = load("t10k")
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    # The epochs, timed like convgemm-train's: shuffling, batch assembly and every step, nothing else.
    model.train()
    train_seconds = 0.0
    for _ in range(args.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(train_y))
        for first in range(0, len(order), 64):
            index = order[first:first + 64]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(train_x[index]), train_y[index])
            loss.backward()
            optimizer.step()
        train_seconds += time.perf_counter() - start

    # Inference at batch 1000 over the test set, as convgemm-train's timed evaluation.
    model.eval()
    correct = 0
    with torch.no_grad():
        start = time.perf_counter()
        for first in range(0, len(test_y), 1000):
            logits = model(test_x[first:first + 1000])
            correct += int((logits.argmax(1) == test_y[first:first + 1000]).sum())
        infer_seconds = time.perf_counter() - start
    return {"train": args.epochs * len(train_y) / train_seconds, "inference": len(test_y) / infer_seconds,
            "accuracy": correct / len(test_y), "version": torch.__version__}


def convgemm(args, seed):
    command = [args.train, "--model", REFERENCE_SPEC, "--schedule", "constant", "--weight-decay", "0", "--lr", "0.05",
               "--momentum", "0.9", "--batch", "64", "--epochs", str(args.epochs), "--seed", str(seed), "--threads",
               str(args.threads), "--init", "torch", "--data", args.data, "--eval-batch", "1000"]
    if args.limit:
        command += ["--limit", str(args.limit)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train_vs_pytorch: {' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    final = re.search(r"final test accuracy: ([0-9.]+)%.*training ([0-9.]+) images/s \| inference ([0-9.]+) images/s",
                      result.stdout)
    if not final:
        sys.exit(f"train_vs_pytorch: no final line in convgemm-train's output:\n{result.stdout[-2000:]}")
    return {"train": float(final.group(2)), "inference": float(final.group(3)),
            "accuracy": float(final.group(1)) / 100}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=os.path.join(ROOT, "build", "tools", "convgemm-train"))
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N images (0: all 60,000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds, one run of each framework per seed")
    args = parser.parse_args()
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"train_vs_pytorch: --seeds: expected comma-separated integers, got {args.seeds!r}")
    if args.epochs < 1:
        sys.exit(f"train_vs_pytorch: --epochs: must be at least 1, got {args.epochs}")
    if not os.access(args.train, os.X_OK):
        sys.exit(f"train_vs_pytorch: --train: {args.train} is not an executable (build convgemm first: tools/test)")
    try:
        import torch  # noqa: F401  (only to learn whether it is there)
    except ImportError:
        print("train_vs_pytorch: PyTorch is not installed (Debian: apt-get install python3-torch); skipped")
        return 0

    print(f"reference net, {args.epochs} epoch(s) of {args.limit or 60000} images, batch 64, SGD lr 0.05 momentum 0.9, "
          f"{args.threads} threads")
    print(f"{'':10} {'seed':>4} {'train img/s':>12} {'infer img/s (batch 1000)':>25} {'test acc':>9}")
    runs = {"PyTorch": [], "convgemm": []}
    for seed in seeds:
        ours = convgemm(args, seed)
        theirs = pytorch(args, seed)
        runs["PyTorch"].append(theirs)
        runs["convgemm"].append(ours)
        print(f"{'PyTorch':10} {seed:4} {theirs['train']:12.0f} {theirs['inference']:25.0f} "
              f"{100 * theirs['accuracy']:8.2f}%   (torch {theirs['version']})")
        print(f"{'convgemm':10} {seed:4} {ours['train']:12.0f} {ours['inference']:25.0f} {100 * ours['accuracy']:8.2f}%")
        print(f"{'ratio':10} {seed:4} {ours['train'] / theirs['train']:11.2f}x "
              f"{ours['inference'] / theirs['inference']:24.2f}x", flush=True)
    if len(seeds) > 1:
        print(f"over {len(seeds)} seeds: median throughput ratio, final test accuracy mean +- standard deviation")
        for name, results in runs.items():
            accuracies = [100 * r["accuracy"] for r in results]
            print(f"{name:10} train {statistics.median(r['train'] for r in results):7.0f} img/s  "
                  f"accuracy {statistics.mean(accuracies):.2f} +- {statistics.stdev(accuracies):.2f} % "
                  f"(min {min(accuracies):.2f}, max {max(accuracies):.2f})")
        ratios = [o["train"] / t["train"] for o, t in zip(runs["convgemm"], runs["PyTorch"])]
        print(f"{'ratio':10} train {statistics.median(ratios):.2f}x (median of the per-seed ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
