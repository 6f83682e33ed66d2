"""Representation metrics for image models: MS-SSIM of reconstructions and a linear probe on codes."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

# pytorch-msssim asserts min(H, W) > (win_size - 1) * 2**4 = 160 for its default 11-px window and
# five scales, whatever the weights; smaller images are upsampled bilinearly to this side first.
MS_SSIM_SIDE = 176


def ms_ssim_upsampled(x: torch.Tensor, y: torch.Tensor, side: int = MS_SSIM_SIDE) -> torch.Tensor:
    """Per-image MS-SSIM of x, y: [B, C, H, W] in [0, 1] -> [B]. Both are resized bilinearly to
    side x side when min(H, W) is too small for pytorch-msssim's five scales, the same way for
    every model, so scores compare across models here (not with the paper's, whose filter differs).
    Always in fp32, also inside a bf16 autocast (``trainer.precision=bf16``): in bf16 its Gaussian
    filters overflow to inf."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ms_ssim_fp32(x.float(), y.float(), side)


def _ms_ssim_fp32(x: torch.Tensor, y: torch.Tensor, side: int) -> torch.Tensor:
    if min(x.shape[-2:]) <= 160:
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(side, side), mode="bilinear", align_corners=False)
    if x.device.type != "cpu":
        return ms_ssim(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0, size_average=False)
    # oneDNN runs the 1x11 single-channel Gaussian convs ~5x slower than ATen's own CPU kernel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the flags context warns about Intel-GPU TF32
        with torch.backends.mkldnn.flags(enabled=False):
            return ms_ssim(x.clamp(0, 1), y.clamp(0, 1), data_range=1.0, size_average=False)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, max_iter: int = 300) -> float:
    """Fit a multinomial logistic regression (scikit-learn, L2, lbfgs) on codes train_x: [N, F]
    with labels [N]; return its accuracy on test_x: [M, F]. Runs on the host."""
    def host(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe capped at max_iter is still a probe
        clf = LogisticRegression(max_iter=max_iter).fit(host(train_x), host(train_y).astype(int))
    return float(clf.score(host(test_x), host(test_y).astype(int)))
