"""The rendering loss the trainer builds: MSE plus an optional VGG-19 perceptual term.

Weights from the config (reference defaults: l2 1.0, perceptual 0.5). The loss modules are frozen and
never part of the model's checkpoint. A perceptual weight above zero with no weight file
(training.perceptual_weights_path, or the reference's ./metric_checkpoint/imagenet-vgg-verydeep-19.mat)
stops at start, saying where to get one.
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.config import ConfigError

VGG_HELP = ("set training.perceptual_weights_path to a local VGG-19 file: the MatConvNet "
            "imagenet-vgg-verydeep-19.mat the reference uses (MatConvNet's pretrained models page), or a "
            "torchvision VGG-19 state dict saved with torch.save(vgg19(weights='IMAGENET1K_V1').state_dict(), "
            "path) on a machine that has torchvision; or set training.perceptual_loss_weight=0")
# Where the reference's model/loss.py (_load_weights, both repos) keeps the MatConvNet file: relative
# to the working directory, so users coming from its code may already have it there.
REFERENCE_VGG_FILE = Path("metric_checkpoint") / "imagenet-vgg-verydeep-19.mat"


def perceptual_weights_file(training) -> Path:
    """training.perceptual_weights_path, else the reference's ./metric_checkpoint file if it exists."""
    if training.perceptual_weights_path:
        return Path(training.perceptual_weights_path)
    if REFERENCE_VGG_FILE.is_file():
        return REFERENCE_VGG_FILE
    raise ConfigError(f"training.perceptual_loss_weight={training.perceptual_loss_weight} needs VGG-19 weights: "
                      f"training.perceptual_weights_path is not set and ./{REFERENCE_VGG_FILE.as_posix()} (where "
                      f"the reference keeps it) does not exist in {Path.cwd()}; " + VGG_HELP)


class RenderLoss(nn.Module):
    def __init__(self, training):
        super().__init__()
        t = training
        self.l2_weight, self.perceptual_weight = t.l2_loss_weight, t.perceptual_loss_weight
        self.perceptual = None
        if t.lpips_loss_weight > 0:
            raise ConfigError("training.lpips_loss_weight > 0 is not supported (the lpips package needs "
                              "torchvision); use training.perceptual_loss_weight, the VGG-19 perceptual loss")
        if self.perceptual_weight > 0:
            from training.perceptual import PerceptualLoss
            self.perceptual = PerceptualLoss.from_file(perceptual_weights_file(t))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pred, target [b, v_t, 3, h, w] in [0, 1] -> (weighted total, detached parts incl. psnr)."""
        l2 = F.mse_loss(pred.float(), target.float())
        total = self.l2_weight * l2
        # The reference's training PSNR: -10 log10 of the batch's MSE (not a mean of per-image PSNRs).
        parts = {"l2": l2.detach(), "psnr": -10.0 * torch.log10(l2.detach())}
        if self.perceptual is not None:
            perceptual = self.perceptual(pred.flatten(0, 1), target.flatten(0, 1))
            total = total + self.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.detach()
        return total, parts
