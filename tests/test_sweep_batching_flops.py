"""benchmarks/sweep_batching.py's arithmetic count, which its printed ceiling rests on: a
grouped convolution's backward pass costs what its forward pass costs, once per gradient
asked for, and a plain matrix product its 2mnk."""

import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from sweep_batching import grid_flops  # noqa: E402


def test_grouped_convolution_backward_is_counted_once_per_gradient():
    groups, batch, cin, cout, side = 4, 3, 8, 6, 5
    x = torch.randn(batch, groups * cin, side, side, requires_grad=True)
    w = torch.randn(groups * cout, cin, 3, 3, requires_grad=True)
    # By hand: every output value is a sum over cin x 3 x 3 multiply-adds.
    forward = 2 * batch * groups * cout * side * side * cin * 9

    def both():
        torch.autograd.grad(F.conv2d(x, w, padding=1, groups=groups).sum(), [x, w])

    def weight_only():
        torch.autograd.grad(F.conv2d(x.detach(), w, padding=1, groups=groups).sum(), [w])

    assert grid_flops(both) == 3 * forward
    assert grid_flops(weight_only) == 2 * forward


def test_matrix_products_count_two_flops_per_multiply_add():
    a, b = torch.randn(7, 5, 3), torch.randn(7, 3, 4)
    assert grid_flops(lambda: torch.bmm(a, b)) == 2 * 7 * 5 * 3 * 4
