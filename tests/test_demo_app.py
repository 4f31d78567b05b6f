"""The demo for real: app.py serves on localhost and gradio_client drives it like a user (tick views,
untick one, render a candidate view and a path point). The images it returns are compared with a
DemoSession built in this process from the same checkpoint. Skipped without the demo extra."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from data import synthetic
from demo.session import DemoSession, load_scene
from evaluation.checkpoint import load_model
from model import build_model
from tests.conftest import tiny_config
from utils.config import to_dict
from utils.images import to_uint8

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"app.py did not answer at {url} within {STARTUP_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    synthetic.generate(tmp, "rooms", 1, 0, frames=8, size=32, seed=0)
    cfg = tiny_config("efficient_lvsm", image_size=32)
    torch.manual_seed(1)
    ckpt = tmp / "tiny.pt"
    torch.save({"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)}, ckpt)
    list_file = tmp / "train" / "full_list.txt"
    url = f"http://127.0.0.1:{free_port()}/"
    log = tmp / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(ckpt), "--data",
                                 str(list_file), "--scene", "rooms_00000", "--max_views", "6", "--device", "cpu",
                                 "--trajectory_frames", "5", "--port", url.rsplit(":", 1)[1].strip("/")],
                                cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(url, proc, log)
        yield url, ckpt, list_file
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def local_session(ckpt, list_file, inputs):
    model, cfg, _ = load_model(ckpt, device="cpu")
    session = DemoSession(model, load_scene(cfg, list_file, "rooms_00000", max_views=6))
    session.set_inputs(inputs)
    return session


def read_png(path, size: int = 32) -> np.ndarray:
    """The served image at the render's own size: the app shows small renders enlarged by a whole
    factor (nearest neighbour), so every factor-th pixel is the rendered one."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))[..., :3]
    factor = image.shape[0] // size
    assert factor >= 1 and image.shape[:2] == (size * factor, size * factor)
    assert np.array_equal(image, image[::factor, ::factor].repeat(factor, 0).repeat(factor, 1))
    return image[::factor, ::factor]


def rows(table) -> list[dict]:
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def test_demo_adds_removes_and_renders_through_the_browser_api(served):
    url, ckpt, list_file = served
    client = gradio_client.Client(url, verbose=False)

    # Tick views 0, 3 and 5 (the app starts with 0 and 3): one add; view 1 is the target.
    render, truth, info, table = client.predict([0, 3, 5], "candidate view", 1, 0, api_name="/set_inputs")
    assert "inputs [0, 3, 5]" in info and "held out" in info
    steps = rows(table)
    assert [(r["action"], r["view"]) for r in steps if r["action"] != "render"][-1] == ("add", 5)

    # Untick view 3: a remove, then the render from views 0 and 5.
    render, truth, info, table = client.predict([0, 5], "candidate view", 1, 0, api_name="/set_inputs")
    assert "inputs [0, 5]" in info
    assert [(r["action"], r["view"]) for r in rows(table) if r["action"] != "render"][-1] == ("remove", 3)
    session = local_session(ckpt, list_file, [0, 5])
    expected, _ = session.render_views([1])
    got = read_png(render).astype(int)
    assert got.shape == (32, 32, 3) == tuple(expected.shape[-2:]) + (3,)
    assert np.abs(got - to_uint8(expected[0]).astype(int)).max() <= 1  # PNG: what the model rendered
    assert np.array_equal(read_png(truth), to_uint8(session.scene.images[1]))

    # A point on the camera path through all candidates.
    render, truth, info, _ = client.predict("path", 1, 2, api_name="/show")
    assert "path point 2" in info and truth is None
    c2w, k = session.trajectory(5)
    expected, _ = session.render(c2w[2:3], k[2:3])
    assert np.abs(read_png(render).astype(int) - to_uint8(expected[0]).astype(int)).max() <= 1
