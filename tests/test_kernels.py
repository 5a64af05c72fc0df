"""No crash on any CPU path: the guard that keeps narrow strided 1x1 convolutions off oneDNN's AVX2 kernel
that corrupts the heap (osp_engine/running/kernels.py, benchmarks/repro_onednn_1x1.py), and the lesson
trained end to end on that path with one thread, in a fresh process."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from conftest import ROOT
from osp_engine.running.kernels import NARROW, guard_strided_1x1
from osp_engine.storage.reader import list_runs

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


class Shortcut(nn.Module):
    """A 3x3 conv beside a strided 1x1 shortcut, as in a ResNet's downsampling block."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.main = nn.Conv2d(cin, 8, 3, stride=2, padding=1, bias=False)
        self.short = nn.Conv2d(cin, 8, 1, stride=2, bias=False)

    def forward(self, x):
        return self.main(x) + self.short(x)


def _inputs_seen(model: nn.Module, x: torch.Tensor) -> dict[str, bool]:
    """Whether each conv received an NCHW-contiguous input in one forward."""
    seen = {}
    for name, m in model.named_children():
        m.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args[0].is_contiguous()))
    model(x)
    return seen


def test_only_a_narrow_channels_last_input_of_a_strided_1x1_conv_is_copied_to_nchw():
    for cin, copied in ((3, True), (NARROW - 1, True), (NARROW, False), (16, False)):
        model = Shortcut(cin)
        x = torch.randn(2, cin, 8, 8).contiguous(memory_format=torch.channels_last)
        assert guard_strided_1x1(model) == 1
        plain = Shortcut(cin)
        plain.load_state_dict(model.state_dict())
        seen = _inputs_seen(model, x)
        assert seen == {"main": False, "short": copied}              # the 3x3 conv keeps oneDNN's layout
        assert torch.allclose(model(x), plain(x), atol=1e-5)          # the same convolution
    nchw = torch.randn(2, 3, 8, 8)
    model = Shortcut(3)
    guard_strided_1x1(model)
    assert _inputs_seen(model, nchw) == {"main": True, "short": True}


SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from osp_engine.running.kernels import guard_strided_1x1
conv = torch.nn.Conv2d(4, 3, 1, stride=2, bias=False)
guard_strided_1x1(conv)
for _ in range(3):
    x = torch.randn(64, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    conv(x).square().sum().backward()
print("ok")
"""


def test_the_guarded_layer_that_corrupted_the_heap_runs_clean_on_the_avx2_path():
    """The lesson's pruned shortcut (4 -> 3 channels, stride 2, 64 images of 8x8) under the AVX2 kernels,
    glibc checking every free where the machine has its malloc debugger: unguarded it aborts at once."""
    env = {**os.environ, **AVX2}
    if MALLOC_DEBUG.is_file():
        env.update(LD_PRELOAD=str(MALLOC_DEBUG), GLIBC_TUNABLES="glibc.malloc.check=3")
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stderr[-2000:])


def test_the_lesson_finishes_on_target_on_the_avx2_path_with_one_thread(tmp_path):
    """The lesson preset end to end, as an AVX2-only laptop runs it: it aborted in the first epoch after
    the prune, when most layers keep 3-5 channels."""
    res = subprocess.run([sys.executable, "-m", "osp_engine", "run", "--preset", "lesson", "--set", "pause_at=",
                          "--set", "speed_budget_s=0", "--runs-dir", str(tmp_path)], cwd=ROOT, env={**os.environ, **AVX2},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    (run,) = list_runs(tmp_path)
    s = run.summary()
    assert s["status"] == "finished" and s["epochs"] == s["total_epochs"]
    assert abs(s["flops_reduction"] - 0.95) <= 0.005 and s["target_miss"] is None
