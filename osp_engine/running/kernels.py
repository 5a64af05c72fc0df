"""Keeping PyTorch's CPU convolutions off a kernel that corrupts the heap.

oneDNN 3.12 (inside PyTorch 2.14) writes past its buffers in the weight gradient of a strided 1x1
convolution whose input is channels-last (NHWC) with few input channels (2-6 seen; 1 and 7-32 clean)
when it runs its AVX2 kernels: `jit_avx2_1x1_convolution_bwd_weights`, found with valgrind
(benchmarks/repro_onednn_1x1.py). That is any CPU without AVX-512, or `ONEDNN_MAX_CPU_ISA=AVX2`, and
the process aborts ("corrupted double-linked list") or crashes later. A pruned network reaches such
shapes (a ResNet shortcut left with 3-4 channels), and on CPU a whole network runs channels-last as
soon as its input does: a batch of one-channel images always looks channels-last to PyTorch.

`guard_strided_1x1` feeds a strided 1x1 convolution a contiguous NCHW copy of its input on CPU when
that input has fewer than NARROW channels (one AVX2 vector of floats): oneDNN then takes its other,
sound kernels. Every other layer, and every such layer while it is wider, keeps oneDNN's own choice,
so a network is touched only once pruning has made a shortcut that narrow. The output is the same
convolution (to float rounding); the cost is one copy of a narrow input (benchmarks/repro_onednn_1x1.py).
"""
from __future__ import annotations

import torch
from torch import nn

NARROW = 8                # input channels below which the guard copies: 2-6 corrupt, 8 floats fill one AVX2 vector


def _nchw_input(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: a narrow CPU input (N, C < NARROW, H, W) that is not NCHW-contiguous, copied to
    NCHW; any other input unchanged (None)."""
    x = args[0]
    if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() == 4 and x.shape[1] < NARROW \
            and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def strided_1x1(module: nn.Module) -> bool:
    """A 2-d convolution with a 1x1 kernel and a stride above 1: the layers the guard covers."""
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and max(module.stride) > 1


def guard_strided_1x1(model: nn.Module) -> int:
    """Give every strided 1x1 convolution of `model` the NCHW input hook; returns how many got it.

    Call it once per model: the hook lives on the layer, which a physical prune keeps (only its tensors
    change), and acts once the prune has made the layer narrow. It does nothing on CUDA, for a wide
    input or for one already NCHW, so a second call only costs a call."""
    layers = [m for m in model.modules() if strided_1x1(m)]
    for m in layers:
        m.register_forward_pre_hook(_nchw_input)
    return len(layers)
