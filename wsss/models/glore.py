"""Graph-based global reasoning unit (GloRe, Chen et al. CVPR 2019) as NSROM uses it.

Input X: (B, K, H, W), L = H*W positions.

- state reduction ``conv_state`` (1x1, K -> S, bias): X' (B, S, L)
- projection ``conv_proj`` (1x1, K -> N, bias): B (B, N, L);  V = X' Bᵀ (B, S, N), no 1/L
- graph convolution ``gcn``: H = V + gcn.conv1(V) (1-D conv over the node axis, N -> N, bias;
  it plays -A_g), then Z = gcn.conv2(ReLU(H)) (1-D conv over the state axis, S -> S, no bias;
  it plays W_g). In the paper's node-major form: Z = ReLU((I - A_g)V + b) W_g.
- reverse projection with the same B: Y = Z B (B, S, L); ``conv_extend`` (1x1, S -> K, no bias),
  ``blocker`` BatchNorm (eps 1e-4), added to X.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GraphConv(nn.Module):
    """Z = conv2(ReLU(V + conv1(V))) for V: (B, S, N); ``conv1`` mixes the N nodes (bias),
    ``conv2`` the S states (no bias). Names as in the reference GloRe implementation."""

    def __init__(self, num_state: int, num_node: int):
        super().__init__()
        self.conv1 = nn.Conv1d(num_node, num_node, 1, bias=True)  # over nodes: -A_g
        self.conv2 = nn.Conv1d(num_state, num_state, 1, bias=False)  # over states: W_g

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.conv1(v.transpose(1, 2)).transpose(1, 2)  # mixes nodes, per state
        h = F.relu(v + h)
        return self.conv2(h)


class GloRe(nn.Module):
    """``forward``: (B, K, H, W) -> (B, K, H, W) = X + BN(conv_extend(Y))."""

    def __init__(self, in_channels: int = 512, num_state: int = 128, num_node: int = 64,
                 bn_eps: float = 1e-4, normalize: bool = False):
        super().__init__()
        self.normalize = normalize
        self.conv_state = nn.Conv2d(in_channels, num_state, 1, bias=True)
        self.conv_proj = nn.Conv2d(in_channels, num_node, 1, bias=True)
        self.gcn = GraphConv(num_state, num_node)
        self.conv_extend = nn.Conv2d(num_state, in_channels, 1, bias=False)
        self.blocker = nn.BatchNorm2d(in_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        state = self.conv_state(x).flatten(2)  # (B, S, L)
        proj = self.conv_proj(x).flatten(2)  # (B, N, L)
        v = torch.bmm(state, proj.transpose(1, 2))  # (B, S, N)
        if self.normalize:
            v = v / (h * w)
        z = self.gcn(v)  # (B, S, N)
        y = torch.bmm(z, proj).view(b, -1, h, w)  # (B, S, H, W)
        return x + self.blocker(self.conv_extend(y))
