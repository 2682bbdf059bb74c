"""Output activations of the camera head and the dense (DPT) heads (VGGT_SPEC §4, §5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def inverse_log(x: Tensor) -> Tensor:
    """sign(x) * (exp(|x|) - 1)."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def activate_pose(encoding: Tensor) -> Tensor:
    """[..., 9] = (t[3], quat[4], fov[2]): translation and quaternion linear, field of view ReLU."""
    return torch.cat([encoding[..., :7], F.relu(encoding[..., 7:])], dim=-1)


def activate_dense(out: Tensor, activation: str, conf_activation: str) -> tuple[Tensor, Tensor]:
    """[N, C, H, W] head output -> (values [N, H, W, C-1], confidence [N, H, W]); the last channel is confidence."""
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = inverse_log(values)
    elif activation == "linear":
        pass
    elif activation == "relu":
        values = F.relu(values)
    elif activation == "sigmoid":
        values = torch.sigmoid(values)
    else:
        raise ValueError(f"unknown dense activation '{activation}'")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf = conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown confidence activation '{conf_activation}'")
    return values, conf
