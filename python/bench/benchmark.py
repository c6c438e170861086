#!/usr/bin/env python3
"""The Python package's benchmark: one process, the same RevNet-110 (MemCNN's CIFAR RevNet-110:
bottleneck-free basic blocks, stages of 9 couplings at 32/64/128 channels) and batch, trained one step
at a time in five ways:

  plain          PyTorch only: the couplings computed in Python, full autograd graph
  checkpoint     PyTorch only: every coupling under torch.utils.checkpoint
  recompute      memcnn.InvertibleModuleWrapper(fused_backward=False): MemCNN's inverse-then-recompute
  fused          memcnn.InvertibleModuleWrapper (default): the fused coupling backward
  C++ fused      the same network built in C++ (memcnn::models), stepped from Python
  resnet.py      the same network as MemCNN's users build it: memcnn.models.resnet.ResNet with
                 RevBasicBlock, as `python -m memcnn.train revnet110 cifar10` does (fused backward)

Step time is the median over rounds (each round runs every variant once, in turn), as a ratio to
plain; peak bytes are the allocator's (memcnn's counting CPU allocator, or CUDA's) during a step
above what was live before it (parameters and gradients), in MiB (2^20 bytes). The overhead of
calling Python F and G from C++ is fused vs C++ fused; the cost of MemCNN's model code is resnet.py
vs C++ fused.

  python3 python/bench/benchmark.py [--batch 128] [--rounds 5] [--threads N] [--cuda] [--output docs/python-benchmarks.md]
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

# glibc returns large blocks to the OS and faults them back in, which can double CPU step times:
# keep them (the C++ benchmark does the same).
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4294967296", MALLOC_TRIM_THRESHOLD_="68719476736")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as functional  # noqa: E402
import torch.utils.checkpoint  # noqa: E402

import memcnn  # noqa: E402
from memcnn import _C  # noqa: E402

MIB = 2.0 ** 20


def bn(channels):
    return nn.BatchNorm2d(channels, momentum=0.99, eps=1e-3)


def conv(cin, cout, kernel, stride=1):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)


class BlockSub(nn.Module):
    """MemCNN's pre-activation basic residual branch: [BN, ReLU] conv3x3 BN ReLU conv3x3."""

    def __init__(self, cin, planes, stride=1, noactivation=False):
        super().__init__()
        self.bn1 = None if noactivation else bn(cin)
        self.conv1 = conv(cin, planes, 3, stride)
        self.bn2 = bn(planes)
        self.conv2 = conv(planes, planes, 3)

    def forward(self, x):
        if self.bn1 is not None:
            x = torch.relu_(self.bn1(x))
        return self.conv2(torch.relu_(self.bn2(self.conv1(x))))


class ResidualBlock(nn.Module):
    def __init__(self, cin, planes, stride, noactivation):
        super().__init__()
        self.sub = BlockSub(cin, planes, stride, noactivation)
        self.downsample = nn.Sequential(conv(cin, planes, 1, stride), bn(planes))

    def forward(self, x):
        return self.sub(x) + self.downsample(x)


class PlainCoupling(nn.Module):
    """y1 = x1 + F(x2), y2 = x2 + G(y1), in PyTorch only."""

    def __init__(self, F, G):
        super().__init__()
        self.Fm, self.Gm = F, G

    def forward(self, x):
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = x1 + self.Fm(x2)
        y2 = x2 + self.Gm(y1)
        return torch.cat([y1, y2], dim=1)


class Checkpointed(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.module, x, use_reentrant=False)


def revnet110(variant, num_classes=10):
    layers, channels, strides = (9, 9, 9), (32, 32, 64, 128), (1, 1, 2, 2)
    modules = [conv(3, channels[0], 3), bn(channels[0]), nn.ReLU(inplace=True)]
    cin = channels[0]
    for stage, (blocks, planes) in enumerate(zip(layers, channels[1:])):
        for b in range(blocks):
            stride = strides[stage + 1] if b == 0 else 1
            noactivation = stage == 0 and b == 0
            if b == 0 and (stride != 1 or cin != planes):
                modules.append(ResidualBlock(cin, planes, stride, noactivation))
            else:
                F = BlockSub(cin // 2, planes // 2, 1, noactivation)
                G = BlockSub(cin // 2, planes // 2, 1, noactivation)
                if variant == "plain":
                    modules.append(PlainCoupling(F, G))
                elif variant == "checkpoint":
                    modules.append(Checkpointed(PlainCoupling(F, G)))
                else:
                    modules.append(memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(F, G),
                                                                  fused_backward=variant == "fused"))
            cin = planes
    modules += [bn(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    model = nn.Sequential(*modules)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


class PythonVariant:
    def __init__(self, variant, device):
        torch.manual_seed(0)
        self.model = revnet110(variant).to(device)
        self.parameters = list(self.model.parameters())

    def step(self, x, y):
        loss = functional.cross_entropy(self.model(x), y)
        loss.backward()

    def zero_grad(self):
        for p in self.parameters:
            if p.grad is not None:
                p.grad.zero_()

    def count(self):
        return sum(p.numel() for p in self.parameters)


class ResNetModuleVariant(PythonVariant):
    """RevNet-110 from memcnn.models.resnet as the experiments file's revnet110 builds it, except
    batch_norm_fix=True: BatchNorm eps 1e-3 and momentum 0.99, the C++ network's settings (with the
    experiments' eps 1e-5 a step took 9% longer here, from more denormal values; with denormals flushed
    the two were within 3%)."""

    def __init__(self, device):
        from memcnn.models.resnet import ResNet, RevBasicBlock
        torch.manual_seed(0)
        self.model = ResNet(RevBasicBlock, [9, 9, 9], num_classes=10, channels_per_layer=[32, 32, 64, 128],
                            strides=[1, 1, 2, 2], init_max_pool=False, init_kernel_size=3,
                            batch_norm_fix=True).to(device)
        self.parameters = list(self.model.parameters())


class CppVariant:
    def __init__(self, device):
        torch.manual_seed(0)
        if device.type != "cpu":
            raise SystemExit("the C++-built comparison runs on the CPU only")
        self.model = _C.CppModel("revnet110", True)

    def step(self, x, y):
        self.model.step(x, y)

    def zero_grad(self):
        self.model.zero_grad()

    def count(self):
        return self.model.parameter_count()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(runner, x, y, device):
    """Seconds and peak bytes above the bytes live at its start, of one training step."""
    runner.zero_grad()
    synchronize(device)
    with memcnn.MemoryProbe(device) as probe:
        started = time.perf_counter()
        runner.step(x, y)
        synchronize(device)
        seconds = time.perf_counter() - started
    return seconds, probe.peak_above_start()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: all cores)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of: plain,checkpoint,recompute,fused,cpp,resnet (default: all)")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="flush denormal floats to zero (x86 FTZ/DAZ, set before any thread starts, so every "
                             "intra-op thread inherits it): arithmetic on denormals is many times slower and their "
                             "number depends on the weights, which differ between the Python and C++ networks")
    parser.add_argument("--note", default=None, help="a line about the conditions, written under the table")
    parser.add_argument("--output", default=None, help="write the Markdown table here too")
    args = parser.parse_args()
    if args.flush_denormal and not torch.set_flush_denormal(True):
        parser.error("--flush-denormal: this CPU cannot flush denormals")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda else "cpu")  # importing memcnn switched CPU tracking on

    names = ["plain", "checkpoint", "recompute", "fused"] + (["C++ fused"] if device.type == "cpu" else []) + \
        ["resnet.py"]
    if args.variants:
        aliases = {"cpp": "C++ fused", "resnet": "resnet.py"}
        wanted = [aliases.get(v.strip(), v.strip()) for v in args.variants.split(",")]
        unknown = [v for v in wanted if v not in names]
        if unknown:
            parser.error("unknown variant(s) {}; choose from plain,checkpoint,recompute,fused,cpp,resnet".format(unknown))
        names = [n for n in names if n in wanted]
    baseline = names[0]
    runners = {n: PythonVariant(n, device) for n in names if n not in ("C++ fused", "resnet.py")}
    if "C++ fused" in names:
        runners["C++ fused"] = CppVariant(device)
    if "resnet.py" in names:
        runners["resnet.py"] = ResNetModuleVariant(device)
    counts = {n: r.count() for n, r in runners.items()}
    assert len(set(counts.values())) == 1, counts

    torch.manual_seed(1)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    times = {n: [] for n in names}
    peaks = {n: [] for n in names}
    for n in names:  # warm-up: gradients allocated, allocator and oneDNN primed
        measure(runners[n], x, y, device)
    for _ in range(args.rounds):
        for n in names:
            seconds, peak = measure(runners[n], x, y, device)
            times[n].append(seconds)
            peaks[n].append(peak)

    median = {n: statistics.median(times[n]) for n in names}
    lines = [
        "| variant | step time (median, s) | ratio to {} | peak bytes in a step above its start (MiB) |".format(baseline),
        "|---|---:|---:|---:|",
    ]
    for n in names:
        lines.append("| {} | {:.3f} | {:.2f}x | {:.1f} |".format(n, median[n], median[n] / median[baseline],
                                                                max(peaks[n]) / MIB))
    table = "\n".join(lines)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = ("RevNet-110 ({} parameters), batch {} of 3x32x32, {} on {} ({} threads), torch {}, {} rounds, {}{}."
              .format(counts[baseline], args.batch, device.type.upper(), platform.machine(), torch.get_num_threads(),
                      torch.__version__, args.rounds, when, ", denormals flushed" if args.flush_denormal else ""))
    print(header)
    print(table)
    overhead = None
    if "C++ fused" in names and "fused" in names:
        overhead = median["fused"] / median["C++ fused"] - 1
        print("Python F and G called from C++ vs the same network built in C++: {:+.1f}% step time".format(
            100 * overhead))
    resnet_ratio = None
    if "C++ fused" in names and "resnet.py" in names:
        resnet_ratio = median["resnet.py"] / median["C++ fused"]
        print("memcnn.models.resnet's RevNet-110 vs the same network built in C++: {:.3f}x step time, "
              "{:.1f} vs {:.1f} MiB".format(resnet_ratio, max(peaks["resnet.py"]) / MIB, max(peaks["C++ fused"]) / MIB))
    if args.output:
        with open(args.output, "w") as out:
            out.write("# Python package benchmark\n\n")
            out.write("Written by `python3 python/bench/benchmark.py --output docs/python-benchmarks.md` "
                      "(the C++ benchmark, `memcnn-bench`, writes `docs/benchmarks.md`).\n\n")
            out.write(header + "\n\n" + table + "\n\n")
            out.write("- plain and checkpoint are PyTorch alone (checkpoint: `torch.utils.checkpoint` around each "
                      "coupling, `use_reentrant=False`); recompute and fused are `memcnn.InvertibleModuleWrapper` "
                      "around `memcnn.AdditiveCoupling` with Python F and G, `fused_backward=False` and `True`; "
                      "C++ fused is the same network built in C++ (`memcnn::models`), stepped from Python.\n")
            out.write("- Peak bytes: the allocator's peak during a step (forward, loss, backward) minus the bytes "
                      "live before it (parameters, gradients), the largest over the rounds.\n")
            if args.note:
                out.write("- " + args.note + "\n")
            if overhead is not None:
                out.write("- Calling Python F and G from C++ costs {:+.1f}% step time against the network built in "
                          "C++ (fused vs C++ fused).\n".format(100 * overhead))
            if resnet_ratio is not None:
                out.write("- resnet.py is RevNet-110 built by `memcnn.models.resnet` (MemCNN's model code, as "
                          "`python -m memcnn.train revnet110 cifar10` builds it): {:.3f}x the step time of the network "
                          "built in C++.\n".format(resnet_ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
