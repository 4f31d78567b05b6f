"""The pixelSplat-chunk converter: round trips, failures left out whole, resumability, flags."""

import io
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.process_data import main
from data.scene_format import read_scene_json, read_scene_list

W, H = 64, 48
NORM_K = (0.9, 1.2, 0.5, 0.45)  # fx/W, fy/H, cx/W, cy/H


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((H, W, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _w2c(angle: float, t) -> torch.Tensor:
    """A rotation about y by `angle` with translation t, as [3, 4]."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return torch.cat([rot, torch.tensor(t, dtype=torch.float32)[:, None]], dim=1)


def _scene(key: str, n: int, seed: int, corrupt_frame: int | None = None) -> dict:
    jpegs = [_jpeg(seed * 100 + i) for i in range(n)]
    if corrupt_frame is not None:
        jpegs[corrupt_frame] = b"not a jpeg at all" * 10
    rows = [torch.cat([torch.tensor(NORM_K), torch.zeros(2), _w2c(0.1 * i, [0.1 * i, -0.2, 1.0]).flatten()])
            for i in range(n)]
    return {"key": key, "url": f"https://example.com/{key}", "timestamps": torch.arange(n, dtype=torch.int64) * 1000,
            "cameras": torch.stack(rows).float(),
            "images": [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]}


@pytest.fixture
def chunks(tmp_path):
    """ROOT with train/000000.torch (good_a, bad_jpeg) and train/000001.torch (good_b)."""
    root = tmp_path / "root"
    (root / "train").mkdir(parents=True)
    torch.save([_scene("good_a", 4, 1), _scene("bad_jpeg", 3, 2, corrupt_frame=1)], root / "train" / "000000.torch")
    torch.save([_scene("good_b", 3, 3)], root / "train" / "000001.torch")
    return root


def _run(root, out, *extra):
    return main(["--base_path", str(root), "--output_dir", str(out), "--num_workers", "1", *extra])


def test_round_trip(chunks, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(chunks, out) == 0
    report = capsys.readouterr().out
    assert "2 scenes converted" in report and "1 failed" in report
    assert "bad_jpeg" in report and "frame 1" in report
    source = torch.load(chunks / "train" / "000000.torch", weights_only=True)[0]
    meta = out / "train" / "metadata" / "good_a.json"
    scene = read_scene_json(meta)
    assert scene["scene_name"] == "good_a" and len(scene["frames"]) == 4
    expected_k = [NORM_K[0] * W, NORM_K[1] * H, NORM_K[2] * W, NORM_K[3] * H]
    for i, frame in enumerate(scene["frames"]):
        assert frame["image_path"] == f"../images/good_a/{i:05d}.jpg"  # order and indices kept
        np.testing.assert_allclose(frame["fxfycxcy"], expected_k, rtol=1e-6)
        w2c = torch.tensor(frame["w2c"])
        assert torch.equal(w2c[:3], source["cameras"][i, 6:].view(3, 4))
        assert w2c[3].tolist() == [0.0, 0.0, 0.0, 1.0]
        image_file = meta.parent / frame["image_path"]
        assert image_file.read_bytes() == source["images"][i].numpy().tobytes()  # bytes unchanged
        with Image.open(image_file) as im, Image.open(io.BytesIO(_jpeg(100 + i))) as ref:
            assert im.size == (W, H)
            assert np.array_equal(np.asarray(im), np.asarray(ref))
    assert not (out / "train" / "metadata" / "bad_jpeg.json").exists()


def test_full_list_and_resume(chunks, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(chunks, out) == 0
    list_file = out / "train" / "full_list.txt"
    assert list_file.read_text().splitlines() == ["metadata/good_a.json", "metadata/good_b.json"]
    assert [p.name for p in read_scene_list(list_file)] == ["good_a.json", "good_b.json"]
    assert all(p.is_file() for p in read_scene_list(list_file))
    capsys.readouterr()

    assert _run(chunks, out) == 0
    assert "0 scenes converted, 2 skipped" in capsys.readouterr().out

    (out / "train" / "metadata" / "good_b.json").unlink()
    assert _run(chunks, out) == 0
    assert "1 scenes converted, 1 skipped" in capsys.readouterr().out
    assert list_file.read_text().splitlines() == ["metadata/good_a.json", "metadata/good_b.json"]


def test_bad_pose_and_lengths_left_out(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "test").mkdir(parents=True)
    nan_pose, short = _scene("nan_pose", 3, 4), _scene("short_cams", 3, 5)
    nan_pose["cameras"][2, 8] = float("nan")
    short["cameras"] = short["cameras"][:2]
    torch.save([nan_pose, short, _scene("ok", 2, 6)], root / "test" / "a.torch")
    out = tmp_path / "out"
    assert _run(root, out, "--mode", "test") == 0
    report = capsys.readouterr().out
    assert "1 scenes converted" in report and "2 failed" in report
    assert "nan_pose: w2c" in report and "non-finite" in report
    assert "short_cams: mismatched lengths" in report
    assert sorted(p.name for p in (out / "test" / "metadata").iterdir()) == ["ok.json"]


def test_two_workers_and_data_dir_alias(chunks, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--data_dir", str(chunks), "--output_dir", str(out), "--num_workers", "2"]) == 0
    assert "2 scenes converted" in capsys.readouterr().out
    assert (out / "train" / "full_list.txt").read_text().splitlines() == [
        "metadata/good_a.json", "metadata/good_b.json"]


def test_check_prints_first_camera(chunks, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--base_path", str(chunks), "--output_dir", str(out), "--check"]) == 0
    report = capsys.readouterr().out
    assert "key: good_a" in report and "frames: 4" in report
    assert f"{W} x {H}" in report
    assert f"{NORM_K[0] * W:.1f}" in report  # fx in pixels
    assert "w2c" in report
    assert not (out / "train" / "metadata").exists()


def test_missing_root_exits_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert _run(missing, tmp_path / "out") == 2
    assert str(missing / "train") in capsys.readouterr().err
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert _run(tmp_path / "empty", tmp_path / "out") == 2
    assert "no .torch files" in capsys.readouterr().err


def test_reference_flags_num_processes_and_chunk_size(chunks, tmp_path, capsys):
    """The authors' command line (--num_processes, --chunk_size) converts the same scenes."""
    out = tmp_path / "out"
    assert main(["--base_path", str(chunks), "--output_dir", str(out), "--num_processes", "2",
                 "--chunk_size", "10"]) == 0
    assert "2 scenes converted" in capsys.readouterr().out
    assert (out / "train" / "full_list.txt").read_text().splitlines() == [
        "metadata/good_a.json", "metadata/good_b.json"]


def test_chunk_size_is_files_per_worker_task(chunks, tmp_path, monkeypatch):
    """As the reference's Pool.imap chunksize: each task holds up to --chunk_size .torch files."""
    import data.process_data as process_data
    torch.save([_scene("good_c", 2, 7)], chunks / "train" / "000002.torch")
    tasks = []

    class InlinePool:  # runs tasks in this process and records them
        def __init__(self, workers, mp_context=None, initializer=None, initargs=()):
            self.workers = workers

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, batch, out_dir):
            from concurrent.futures import Future
            tasks.append((self.workers, [p.name for p in batch]))
            future = Future()
            future.set_result(fn(batch, out_dir))
            return future

    monkeypatch.setattr(process_data, "ProcessPoolExecutor", InlinePool)
    out = tmp_path / "out"
    assert main(["--base_path", str(chunks), "--output_dir", str(out), "--num_processes", "3",
                 "--chunk_size", "2"]) == 0
    assert tasks == [(3, ["000000.torch", "000001.torch"]), (3, ["000002.torch"])]
    assert len((out / "train" / "full_list.txt").read_text().splitlines()) == 3


@pytest.mark.parametrize("flag", ["--num_processes", "--chunk_size"])
def test_reference_flags_reject_zero(chunks, tmp_path, capsys, flag):
    with pytest.raises(SystemExit):
        main(["--base_path", str(chunks), "--output_dir", str(tmp_path / "out"), flag, "0"])
    assert f"{flag}" in capsys.readouterr().err


def test_unloadable_chunks_are_named_and_skipped(chunks, tmp_path, capsys):
    """Random bytes and a legacy pickle (refused by weights_only=True): each reported by path with the
    reason; the good chunks are still converted and full_list.txt written, with one or two workers."""
    train = chunks / "train"
    (train / "000002.torch").write_bytes(bytes(range(256)) * 4)
    with open(train / "000003.torch", "wb") as f:  # a pickle of a non-tensor object: refused
        pickle.dump([{"key": "legacy", "when": time.struct_time((2020, 1, 1, 0, 0, 0, 0, 1, 0))}], f)
    (train / "000004.torch").write_bytes(b"")
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        assert _run(chunks, out, "--num_workers", workers) == 0
        report = capsys.readouterr().out
        assert "2 scenes converted" in report and "4 failed" in report, report  # bad_jpeg + 3 chunks
        for name in ("000002.torch", "000003.torch", "000004.torch"):
            line = next(x for x in report.splitlines() if name in x)
            assert "chunk skipped" in line, line
        assert "weights_only=True" in next(x for x in report.splitlines() if "000003.torch" in x)
        assert "EOFError" in next(x for x in report.splitlines() if "000004.torch" in x)
        assert (out / "train" / "full_list.txt").read_text().splitlines() == [
            "metadata/good_a.json", "metadata/good_b.json"]


def test_check_names_an_unloadable_first_chunk(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "0.torch").write_bytes(b"garbage" * 20)
    assert main(["--base_path", str(tmp_path), "--check"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "train" / "0.torch") in err and "weights_only=True" in err


def _children(pid: int) -> list[int]:
    """Pids of the spawned pool workers whose parent is pid (found in /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is missing


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_workers_end_when_the_converter_is_killed(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    (root / "train").mkdir(parents=True)
    scene = _scene("s", 4, 1)
    for c in range(2):  # enough work that the workers are still converting when the parent is killed
        torch.save([{**scene, "key": f"c{c}_{i:04d}"} for i in range(1500)], root / "train" / f"{c}.torch")
    proc = subprocess.Popen([sys.executable, "-m", "data.process_data", "--base_path", str(root), "--output_dir",
                             str(out), "--num_workers", "2"], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 60
        metadata = out / "train" / "metadata"
        while time.monotonic() < deadline and not (metadata.is_dir() and len(os.listdir(metadata)) >= 20):
            time.sleep(0.05)  # workers are converting once scenes appear
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) == 2, "the converter finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived the killed converter"
        assert len(os.listdir(metadata)) < 3000  # they stopped before finishing the work
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
