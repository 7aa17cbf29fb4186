"""A fine-tuning step of EfficientNet-Lite0 on PyTorch eager: the reference that
`cargo bench --bench backbone` runs beside its own fine-tuning step.

The step is what `vlinder train --fine-tune 16` does per batch: every convolution and batch-norm
scale and shift trainable, the batch norms normalising with their stored ImageNet statistics
(evaluation mode, as vlinder's), a new 3-class head behind dropout 0.2, softmax cross-entropy,
backward, one RMSprop update. Batch 32 at 224 pixels, random inputs already normalised, random
labels; the median of the timed steps after two untimed ones.

Set-up (once, outside the repository; PyTorch's wheels are large):

    python3 -m venv /tmp/torch-anchor
    /tmp/torch-anchor/bin/pip install torch efficientnet-lite-pytorch numpy

Usage:

    python lite0_pytorch_train.py WEIGHTS.pth --threads 2 --repetitions 3 [--batch 32] [--size 224]

Prints one `RESULT {json}` line: PyTorch's version and the median step in seconds."""
import argparse, json, time

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

parser = argparse.ArgumentParser()
parser.add_argument("weights")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repetitions", type=int, default=3)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--size", type=int, default=224)
args = parser.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=args.weights)
net._fc = torch.nn.Linear(net._fc.in_features, 3)
net.train()
for module in net.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
        module.eval()
optimizer = torch.optim.RMSprop(net.parameters(), lr=1e-5, alpha=0.9, eps=1e-7)
images = torch.randn(args.batch, 3, args.size, args.size)
labels = torch.randint(0, 3, (args.batch,))


def step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    optimizer.step()


for _ in range(2):
    step()
times = []
for _ in range(args.repetitions):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"torch": torch.__version__, "step_s": float(np.median(times)),
                              "batch": args.batch, "size": args.size}))
