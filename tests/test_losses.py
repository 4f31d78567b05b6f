"""The VGG-19 weight file of the perceptual loss: training.perceptual_weights_path, else where the
reference's model/loss.py keeps it (./metric_checkpoint/imagenet-vgg-verydeep-19.mat, relative to the
working directory), else an error naming both."""

import pytest

import training.perceptual
from configs.schema import config_from_dict
from tests.test_perceptual import random_matconvnet_convs
from training.losses import RenderLoss
from training.perceptual import write_matconvnet
from utils.config import ConfigError

REFERENCE_FILE = "metric_checkpoint/imagenet-vgg-verydeep-19.mat"


def _training(**keys):
    return config_from_dict({"training": {"perceptual_loss_weight": 0.5, **keys}}).training


def test_no_file_anywhere_names_the_key_and_the_reference_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"training.perceptual_weights_path is not set and "
                                          r"./metric_checkpoint/imagenet-vgg-verydeep-19.mat"):
        RenderLoss(_training())
    assert RenderLoss(_training(perceptual_loss_weight=0.0)).perceptual is None  # no VGG wanted: no file needed


def test_reference_location_is_read(tmp_path, monkeypatch):
    """A small MatConvNet file there (conv1_1 only) is found and read: the reader names it when it
    looks for conv1_2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metric_checkpoint").mkdir()
    write_matconvnet(tmp_path / REFERENCE_FILE, random_matconvnet_convs(["conv1_1"]))
    with pytest.raises(ValueError, match=f"layer conv1_2 not found in {REFERENCE_FILE}"):
        RenderLoss(_training())


def test_reference_location_is_passed_and_the_key_wins(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(training.perceptual.PerceptualLoss, "from_file", lambda path: seen.append(str(path)) or None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metric_checkpoint").mkdir()
    write_matconvnet(tmp_path / REFERENCE_FILE, random_matconvnet_convs(["conv1_1"]))
    RenderLoss(_training())
    RenderLoss(_training(perceptual_weights_path="elsewhere/vgg19.pth"))
    assert seen == [REFERENCE_FILE, "elsewhere/vgg19.pth"]
