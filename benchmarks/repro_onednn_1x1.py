"""The lesson's heap corruption reduced to one layer, and what osp's guard against it costs.

What it shows (issue 30; osp_engine/running/kernels.py): under oneDNN's AVX2 kernels (a CPU without
AVX-512, or ONEDNN_MAX_CPU_ISA=AVX2) and one thread, the backward of ONE strided 1x1 convolution whose
input is channels-last with 2-6 channels, here 4 -> 3 channels at stride 2 on 64 images of 8x8 (the
lesson's pruned `stage_2.0.downsample.0`), corrupts the heap: the process aborts ("corrupted
double-linked list", "munmap_chunk(): invalid pointer") or crashes later. valgrind names the writer:

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1 valgrind --redzone-size=256 \\
        python benchmarks/repro_onednn_1x1.py --one 4 3 1
    ==> Invalid write of size 8 ... jit_avx2_1x1_convolution_bwd_weights_t::execute_backward_weights

With glibc's malloc checking (LD_PRELOAD=libc_malloc_debug.so.0 GLIBC_TUNABLES=glibc.malloc.check=3),
6 processes per input width (3, 8 and 24 output channels): 2-6 input channels crash, 1 and 7-32 do not,
and no NCHW input of 1-7 channels does. A one-channel image batch is channels-last to
PyTorch, so the whole demo network runs channels-last on CPU; the prune leaves its shortcut 3-4 wide.

    python benchmarks/repro_onednn_1x1.py [--tries 5] [--steps 200]

1. runs that layer's forward and backward `--tries` times in fresh processes under the AVX2 path, as
   it is (channels-last input) and as osp's guard feeds it (an NCHW copy), and counts the crashes;
   glibc's malloc checking is turned on where the machine has it, so a corruption is caught at once;
2. times a training step of the demo network and of ResNet-56 (channels-last input, this CPU's own
   oneDNN path) with and without the guard, alternated, dense (the guard only checks the width) and
   pruned to 4 channels a layer (the guard copies each shortcut's input), and prints the medians and
   their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def one(cin: int, cout: int, channels_last: bool) -> None:
    """One strided 1x1 convolution, forward and backward, on 64 images of 8x8."""
    import torch

    conv = torch.nn.Conv2d(cin, cout, 1, stride=2, bias=False)
    x = torch.randn(64, cin, 8, 8)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    conv(x.requires_grad_()).square().sum().backward()
    print("ok", flush=True)


def crashes(tries: int) -> None:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    if MALLOC_DEBUG.is_file():
        env.update(LD_PRELOAD=str(MALLOC_DEBUG), GLIBC_TUNABLES="glibc.malloc.check=3")
    print(f"1. conv 4 -> 3 channels, 1x1, stride 2, 64x4x8x8, backward; ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1"
          f"{', glibc malloc check' if MALLOC_DEBUG.is_file() else ''}; {tries} fresh processes each")
    for label, cl in (("channels-last input (as the lesson ran)", 1), ("NCHW input (osp's guard)", 0)):
        codes = [subprocess.run([sys.executable, __file__, "--one", "4", "3", str(cl)], env=env, capture_output=True,
                                timeout=120).returncode for _ in range(tries)]
        bad = sum(c != 0 for c in codes)
        print(f"   {label:<42} {bad} of {tries} crashed (exit codes {codes})")


def cost(steps: int) -> None:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from osp_engine.models import build_model
    from osp_engine.running.kernels import guard_strided_1x1

    print(f"2. one training step (SGD), channels-last input, this CPU's oneDNN path, {torch.get_num_threads()} threads:"
          f" median ms of {steps} steps, plain and guarded alternated 3 times")
    for name, size, ch, batch, width in (("digits-resnet8", 8, 1, 64, 0), ("digits-resnet8", 8, 1, 64, 4),
                                         ("resnet56", 32, 3, 64, 0), ("resnet56", 32, 3, 64, 4)):
        times = {False: [], True: []}
        torch.manual_seed(0)
        x = torch.randn(batch, ch, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,))
        for _ in range(3):
            for guarded in (False, True):
                model = narrowed(build_model(name, 10, size, ch), width, torch.zeros(1, ch, size, size))
                n = guard_strided_1x1(model) if guarded else 0
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                for i in range(steps + 5):
                    t0 = time.perf_counter()
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if i >= 5:                              # the first steps choose kernels
                        times[guarded].append(time.perf_counter() - t0)
        plain, guarded = statistics.median(times[False]), statistics.median(times[True])
        shape = f"pruned to {width} channels" if width else "dense"
        print(f"   {name:<15} {shape:<22} {n} strided 1x1 convs   plain {1000 * plain:7.2f} ms   guarded {1000 * guarded:7.2f} ms"
              f"   guarded/plain {guarded / plain:.3f}")


def narrowed(model, width: int, example):
    """`model` with every prunable group cut to its first `width` channels (0: dense, as built)."""
    if not width:
        return model
    import torch

    from osp_engine.method.graph import build_graph
    from osp_engine.method.groups import build_groups, find_classifier, prune_groups

    graph = build_graph(model, example)
    groups = build_groups(model, graph, find_classifier(model, 10))
    prune_groups(graph, groups, [torch.arange(g.size) < width for g in groups])
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tries", type=int, default=5)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--one", nargs=3, type=int, metavar=("CIN", "COUT", "CHANNELS_LAST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        one(args.one[0], args.one[1], bool(args.one[2]))
        return
    crashes(args.tries)
    cost(args.steps)


if __name__ == "__main__":
    main()
