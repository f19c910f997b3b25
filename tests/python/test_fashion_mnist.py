"""A small CNN trained on Fashion-MNIST for 200 steps twice, with torch.nn.Conv2d and with convgemm.nn.Conv2d, from
the same seed, the same initial weights and the same batches: the two loss trajectories must agree.
Data: Debian's dataset-fashion-mnist (IDX files, gzip) under /usr/share/datasets/fashion-mnist/."""

import gzip
import unittest
from pathlib import Path

import numpy
import torch
from torch import nn

import convgemm.nn as cnn

torch.set_num_threads(2)

DATA = Path("/usr/share/datasets/fashion-mnist")
STEPS, BATCH = 200, 64


def read_idx(path, header_bytes):
    with gzip.open(path, "rb") as file:
        return numpy.frombuffer(file.read(), dtype=numpy.uint8, offset=header_bytes)


def training_set():
    if not DATA.is_dir():
        raise FileNotFoundError(
            f"{DATA} is missing: apt-get install dataset-fashion-mnist (tools/test installs it)")
    images = read_idx(DATA / "train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    labels = read_idx(DATA / "train-labels-idx1-ubyte.gz", 8)
    # Scaled to [0, 1], then standardised with the training set's mean and standard deviation.
    images = (torch.from_numpy(images.astype(numpy.float32)) / 255 - 0.2860) / 0.3530
    return images, torch.from_numpy(labels.astype(numpy.int64))


def make_model(conv):
    """Three convolutions covering padding (int and 'same'), stride and groups; conv is the Conv2d class."""
    return nn.Sequential(
        conv(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 14
        conv(8, 16, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),  # 14 -> 7
        conv(16, 32, 3, stride=2, groups=2), nn.ReLU(),  # 7 -> 3
        nn.Flatten(), nn.Linear(32 * 3 * 3, 10))


def train(conv, images, labels, order):
    torch.manual_seed(0)  # the same initial weights for both classes (tested below, not assumed)
    model = make_model(conv)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    # Plain SGD: with momentum 0.9 the same rounding differences grow ~20x faster (measured), which says more
    # about momentum than about the convolution.
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(STEPS):
        batch = order[step * BATCH:(step + 1) * BATCH]
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return initial, torch.tensor(losses, dtype=torch.float64)


class FashionMnist(unittest.TestCase):
    def test_loss_trajectory_matches_stock_pytorch(self):
        images, labels = training_set()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:STEPS * BATCH]
        stock_initial, stock = train(nn.Conv2d, images, labels, order)
        ours_initial, ours = train(cnn.Conv2d, images, labels, order)
        for key, value in stock_initial.items():
            self.assertTrue(torch.equal(ours_initial[key], value), f"initial {key} differs")

        difference = (ours - stock).abs()
        print(f"\nloss: step 0 {stock[0]:.6f} (|diff| {difference[0]:.2e}), step {STEPS - 1} "
              f"{stock[-1]:.6f} vs {ours[-1]:.6f}; max |diff| over {STEPS} steps {difference.max():.2e} "
              f"(at step {difference.argmax().item()}), of 20-step means "
              f"{(ours - stock).unfold(0, 20, 20).mean(1).abs().max():.2e}; mean of the last 20 "
              f"{stock[-20:].mean():.4f} vs {ours[-20:].mean():.4f}")
        # Step 0 runs the same weights on the same batch: the losses differ only by float32 rounding.
        self.assertLess(difference[0].item(), 1e-5)
        # Later steps differ by more: SGD feeds each rounding difference back into the weights and amplifies
        # it, as it would any change of rounding. The yardstick: stock PyTorch against stock PyTorch with its
        # convolution computed in float64 and rounded to float32 (nothing changed but rounding) differs by up
        # to 2.2e-2 in single losses and 6.7e-4 in 20-step means, over 4 data orders; ours against stock, by up
        # to 5.7e-3 and 7.1e-4. The tolerances are about 2.5x and 7x the yardstick.
        self.assertLess(difference.max().item(), 5e-2)
        window_means = (ours - stock).unfold(0, 20, 20).mean(1).abs()
        self.assertLess(window_means.max().item(), 5e-3)
        # And it learns: the loss falls from ln(10) ~ 2.3 to well under half of that.
        self.assertLess(ours[-20:].mean().item(), 0.5 * ours[0].item())


if __name__ == "__main__":
    unittest.main(verbosity=2)
