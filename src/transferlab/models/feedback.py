"""The ConvLSTM feedback network of Spero (Spero, after Zamir et al.).

`stem`: 3x3 conv, stride 1, to 16 channels, then batch norm (the paper names
no activation after it, so there is none). `lstm1`..`lstm12`: ConvLSTM layers
16-16 x3, 16-32, 32-32 x2, 32-64, 64-64 x5, stride out/in channels, each gate
one 3x3 convolution of the input plus one of the hidden state (the four gates'
convolutions are stored stacked in one conv each; one bias per gate). The
stem runs once; its output is the input X_t^0 of every iteration. The twelve
layers run `iterations` times with shared weights, each layer carrying its
hidden and cell state (zero at the start) from one iteration to the next.

After every iteration the last hidden state is average-pooled to 2x2 and
flattened: at 32x32 inputs the map is 8x8, so this is the paper's 4x4 average
pool and gives its 256 features; other input sizes are pooled to the same 2x2
grid, so the head keeps its shape. The head is FC 256-256, ReLU, dropout,
FC 256-N, applied after every iteration.

`activations(x, names)` gives each named layer's output at the last
iteration (the stem's output is the same at every iteration).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection

import torch
from torch import nn

from transferlab.models.base import TransferableNet, check_input_size

# (in, out) channels of the 12 layers, in units of the stem width (16 in the paper).
_PLAN = ((1, 1), (1, 1), (1, 1), (1, 2), (2, 2), (2, 2), (2, 4),
         (4, 4), (4, 4), (4, 4), (4, 4), (4, 4))

State = tuple[torch.Tensor, torch.Tensor]


class ConvLSTM(nn.Module):
    """One ConvLSTM layer: (x, state) -> (h, new state); state None means zeros."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.out_ch = out_ch
        self.x_conv = nn.Conv2d(in_ch, 4 * out_ch, 3, stride, 1)
        self.h_conv = nn.Conv2d(out_ch, 4 * out_ch, 3, 1, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The paper gives no initialisation. With PyTorch's default, activations
        # shrink about 10x per layer through the 12-layer stack (gradients at
        # lstm1 ~1e-12); weights of std 2/sqrt(fan_in) and input, forget and
        # output gates opened by a bias of 1 keep the signal's scale.
        for conv in (self.x_conv, self.h_conv):
            nn.init.normal_(conv.weight, 0.0, 2.0 / math.sqrt(conv.weight[0].numel()))
        with torch.no_grad():
            self.x_conv.bias.fill_(1.0)
            self.x_conv.bias[2 * self.out_ch:3 * self.out_ch] = 0.0  # the cell candidate g

    def forward(self, x: torch.Tensor, state: State | None = None
                ) -> tuple[torch.Tensor, State]:
        gates = self.x_conv(x)
        if state is None:
            zeros = gates.new_zeros(gates.shape[0], self.out_ch, *gates.shape[2:])
            h, c = zeros, zeros
        else:
            h, c = state
            gates = gates + self.h_conv(h)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class FeedbackNet(TransferableNet):
    def __init__(self, layers: OrderedDict[str, nn.Module], embed_dim: int, head: nn.Module,
                 num_classes: int, iterations: int):
        super().__init__(layers, embed_dim, num_classes, head=head)
        self.num_iterations = iterations
        self.readout = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def _run(self, x: torch.Tensor, wanted: Collection[str] = ()
             ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Embeddings after every iteration, and the wanted layers' last-iteration outputs."""
        names = self.layer_names
        stem = self.layer(names[0])(x)
        acts = {names[0]: stem} if names[0] in wanted else {}
        states: list[State | None] = [None] * (len(names) - 1)
        embeddings = []
        for t in range(self.num_iterations):
            h = stem
            for k, name in enumerate(names[1:]):
                h, states[k] = self.layer(name)(h, states[k])
                if name in wanted and t == self.num_iterations - 1:
                    acts[name] = h
            embeddings.append(self.readout(h))
        return embeddings, acts

    def iteration_embeddings(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x)[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0][-1]

    def activations(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """Each named layer's output at the last iteration."""
        wanted = self._check_wanted(names)
        if wanted == {self.layer_names[0]}:
            return {self.layer_names[0]: self.layer(self.layer_names[0])(x)}
        return self._run(x, wanted)[1]


def build_feedback(in_shape: tuple[int, int, int], num_classes: int, iterations: int = 4,
                   width: int = 16, hidden: int = 256, dropout: float = 0.5) -> FeedbackNet:
    in_ch, height, width_px = check_input_size("feedback", in_shape, 8,
                                               "strides twice by 2 and pools to 2x2")
    if iterations < 1:
        raise ValueError(f"model.feedback.iterations = {iterations}: must be at least 1")
    if width < 1:
        raise ValueError(f"model.feedback.width = {width}: must be at least 1")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["stem"] = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1), nn.BatchNorm2d(width))
    for k, (cin, cout) in enumerate(_PLAN, 1):
        layers[f"lstm{k}"] = ConvLSTM(cin * width, cout * width, cout // cin)
    embed_dim = 4 * _PLAN[-1][1] * width
    head = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    return FeedbackNet(layers, embed_dim, head, num_classes, iterations)
