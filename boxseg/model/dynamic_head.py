"""Dynamic mask head of CondInst (docs/method.md "Student network"), batched over instances with bmm (no loop over
instances).

Parameter layout of one instance (the controller's output vector): the weights of every layer, then the biases
of every layer, each weight row-major (out, in). With C_mask = 8, relative coordinates (2) and layers of 8, 8, 1
channels that is (10*8 + 8*8 + 8*1) + (8 + 8 + 1) = 169 values; with C_mask = 16 it is 233.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from boxseg.model.layers import aligned_upsample, locations_for


def layer_shapes(in_channels: int, channels: int, num_layers: int) -> list[tuple[int, int]]:
    """(out, in) of each dynamic 1x1 conv; `in_channels` already counts the 2 relative-coordinate channels."""
    shapes = []
    for i in range(num_layers):
        cin = in_channels if i == 0 else channels
        cout = 1 if i == num_layers - 1 else channels
        shapes.append((cout, cin))
    return shapes


def num_params(in_channels: int, channels: int, num_layers: int) -> int:
    return sum(o * i + o for o, i in layer_shapes(in_channels, channels, num_layers))


def split_params(params: torch.Tensor, in_channels: int, channels: int, num_layers: int
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(N, P) -> per layer weights (N, out, in) and biases (N, out)."""
    shapes = layer_shapes(in_channels, channels, num_layers)
    expected = sum(o * i + o for o, i in shapes)
    if params.dim() != 2 or params.shape[1] != expected:
        raise ValueError(f"dynamic mask head params: expected (N, {expected}), got {tuple(params.shape)}")
    sizes = [o * i for o, i in shapes] + [o for o, _ in shapes]
    chunks = torch.split(params, sizes, dim=1)
    n = params.shape[0]
    weights = [chunks[k].reshape(n, o, i) for k, (o, i) in enumerate(shapes)]
    biases = [chunks[len(shapes) + k] for k in range(len(shapes))]
    return weights, biases


def relative_coords(locations: torch.Tensor, soi: torch.Tensor, h: int, w: int, stride: int) -> torch.Tensor:
    """(N, 2, h*w): ((x_k - x) / S, (y_k - y) / S) from each instance's location to every mask-feature pixel."""
    grid = locations_for(h, w, stride, locations.device, locations.dtype)  # (hw, 2)
    rel = locations[:, None, :] - grid[None, :, :]  # (N, hw, 2)
    return (rel / soi[:, None, None]).permute(0, 2, 1)


def dynamic_mask_head(mask_feats: torch.Tensor, params: torch.Tensor, locations: torch.Tensor, soi: torch.Tensor,
                      img_idx: torch.Tensor, channels: int = 8, num_layers: int = 3, mask_feat_stride: int = 8,
                      upsample: int = 2) -> torch.Tensor:
    """Mask logits of N instances at stride mask_feat_stride/upsample (4): (N, H/4, W/4).

    mask_feats (B, C, h, w) at stride 8; params (N, P); locations (N, 2) image (x, y) of each instance's FPN
    location; soi (N,) its size-of-interest normaliser; img_idx (N,) its image in the batch.
    """
    _, c, h, w = mask_feats.shape
    n = params.shape[0]
    weights, biases = split_params(params, c + 2, channels, num_layers)
    feats = mask_feats.flatten(2)[img_idx.long()]  # (N, C, hw)
    rel = relative_coords(locations.to(feats.dtype), soi.to(feats.dtype), h, w, mask_feat_stride)
    x = torch.cat([rel, feats], dim=1)  # (N, C+2, hw)
    for k, (wt, b) in enumerate(zip(weights, biases)):
        x = torch.baddbmm(b.unsqueeze(2), wt, x)  # b + W @ x: one batched 1x1 conv for all instances
        if k < num_layers - 1:
            x = F.relu(x)
    logits = x.reshape(n, 1, h, w)
    return aligned_upsample(logits, upsample)[:, 0]
