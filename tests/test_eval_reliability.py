"""Evaluation never mixes scenes and reports what it could not read: scene keys, the gallery's inlined
JSON, malformed index entries, reruns into an existing folder, and unusable output paths."""

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from configs.schema import load_config
from data import synthetic
from inference import main
from model import build_model
from tests.conftest import ROOT
from utils.config import to_dict
from utils.gallery import write_gallery_page

TINY = ["model.transformer.d=32", "model.transformer.d_head=8", "model.transformer.n_layer=1",
        "model.image_tokenizer.image_size=32", "model.target_pose_tokenizer.image_size=32"]
NASTY = "<!--<script>x</script>"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four generated rooms and a tiny checkpoint; the scenes' scene_name fields collide: rooms_00000
    and rooms_00001 are `scene a` and `scene_a` (alike once sanitized), rooms_00002 and rooms_00003 both
    carry the gallery-hostile NASTY name."""
    root = tmp_path_factory.mktemp("reliab")
    synthetic.generate(root / "rooms", "rooms", 0, 4, frames=10, size=32, seed=0)
    meta = root / "rooms" / "test" / "metadata"
    for stem, name in (("rooms_00000", "scene a"), ("rooms_00001", "scene_a"),
                       ("rooms_00002", NASTY), ("rooms_00003", NASTY)):
        scene = json.loads((meta / f"{stem}.json").read_text())
        (meta / f"{stem}.json").write_text(json.dumps({**scene, "scene_name": name}))
    cfg = load_config(ROOT / "configs" / "tiny.yaml", TINY)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg.model).state_dict(), "step": 1, "config": to_dict(cfg)}, root / "tiny.pt")
    return root


def args(setup, out, index=None, scene_list=None):
    test = setup / "rooms" / "test"
    return ["--config", str(ROOT / "configs" / "tiny.yaml"), *TINY, "training.device=cpu",
            f"training.dataset_path={scene_list or test / 'full_list.txt'}", "training.num_views=5",
            "training.num_input_views=2", "training.num_target_views=3", "training.target_has_input=false",
            f"inference.checkpoint_dir={setup / 'tiny.pt'}",
            f"inference.view_idx_file_path={index or test / 'evaluation_index.json'}", f"inference_out_dir={out}"]


def _index(setup) -> dict:
    return json.loads((setup / "rooms" / "test" / "evaluation_index.json").read_text())


def _page_data(out: Path) -> list[dict]:
    page = (out / "index.html").read_text()
    return json.loads(page.split("const DATA = ", 1)[1].split(";\n", 1)[0])


def _image_files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in (out / "images").rglob("*.png")}


def _row_files(rows: list[dict]) -> set[str]:
    return {p for r in rows for p in [*r["inputs"], r["gt"], r["render"], r["error"]]}


def test_scenes_are_keyed_by_metadata_stem_never_merged(setup, tmp_path):
    summary = main(args(setup, tmp_path / "out"))
    out = tmp_path / "out"
    stems = {f"rooms_0000{i}" for i in range(4)}
    assert summary["scenes"] == 4 and summary["images"] == 12  # 4 scenes x 3 targets, none merged
    per_scene = json.loads((out / "per_scene.json").read_text())
    assert {s["scene"] for s in per_scene} == stems and all(s["images"] == 3 for s in per_scene)
    names = {s["scene"]: s["scene_name"] for s in per_scene}
    assert names["rooms_00000"] == "scene a" and names["rooms_00001"] == "scene_a" and names["rooms_00003"] == NASTY
    rows = _page_data(out)
    folders = {r["scene"]: {Path(p).parent.as_posix() for p in [*r["inputs"], r["gt"]]} for r in rows}
    assert all(len(f) == 1 for f in folders.values()) and len({f.pop() for f in folders.values()}) == 4
    assert _row_files(rows) == _image_files(out)  # every image belongs to exactly the rows that name it


def test_duplicate_scene_keys_are_named_not_merged(setup, tmp_path):
    test = setup / "rooms" / "test"
    other = tmp_path / "copy"  # a second metadata file with the same stem, in another folder
    shutil.copytree(test / "metadata", other)
    listed = (test / "full_list.txt").read_text().split()
    scene_list = tmp_path / "list.txt"
    scene_list.write_text("\n".join([str(test / p) for p in listed] + [str(other / "rooms_00001.json")]))
    summary = main(args(setup, tmp_path / "out", scene_list=scene_list))
    assert summary["counts"]["duplicate_scene_key"] == 1 and summary["scenes"] == 3
    failed = {f["scene"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"rooms_00001"} and str(other / "rooms_00001.json") in failed["rooms_00001"]
    assert "rooms_00001" not in {r["scene"] for r in _page_data(tmp_path / "out")}


def test_malformed_index_entries_are_reported_and_the_rest_scored(setup, tmp_path):
    index = _index(setup)
    index["rooms_00000"] = {"context": [0, 5]}  # no target
    index["rooms_00001"] = {"context": [], "target": [1, 2, 3]}
    index["rooms_00002"] = "context 0 5"
    good = index["rooms_00003"]
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    summary = main(args(setup, tmp_path / "out", index=path))
    failed = {f["scene"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"rooms_00000", "rooms_00001", "rooms_00002"}
    assert "'target'" in failed["rooms_00000"] and "'context'" in failed["rooms_00001"]
    assert "str" in failed["rooms_00002"] and all(str(path) in r for r in failed.values())
    assert summary["counts"]["malformed_in_index"] == 3 and summary["counts"]["failed_to_load"] == 0
    assert summary["scenes"] == 1 and summary["images"] == len(good["target"][:3])
    index["rooms_00003"] = [good["context"], good["target"]]  # a list is malformed too
    path.write_text(json.dumps(index))
    summary = main(args(setup, tmp_path / "out2", index=path))
    assert summary["counts"]["malformed_in_index"] == 4 and summary["scenes"] == 0
    assert "list" in {f["scene"]: f["reason"] for f in summary["failed"]}["rooms_00003"]


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", "null"])
def test_unusable_index_file_is_one_error_naming_it(setup, tmp_path, text):
    path = tmp_path / "index.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match=f"error: evaluation index {path}"):
        main(args(setup, tmp_path / "out", index=path))


def test_rerun_replaces_the_old_results_whole(setup, tmp_path):
    out = tmp_path / "out"
    main(args(setup, out))
    first = _image_files(out)
    index = {k: (v if k == "rooms_00002" else None) for k, v in _index(setup).items()}
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    summary = main(args(setup, out, index=path))
    rows = _page_data(out)
    assert summary["scenes"] == 1 and {r["scene"] for r in rows} == {"rooms_00002"}
    assert _image_files(out) == _row_files(rows) and _image_files(out) < first  # no stale images left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "out"]  # no staging leftovers
    assert not (out / ".partial").exists()


def test_rerun_keeps_what_no_evaluation_wrote(setup, tmp_path, capsys):
    """A results folder with a user's notes and another tool's folder (the quick start's pose check):
    a new evaluation replaces its own outputs only, and says what it kept."""
    out = tmp_path / "out"
    main(args(setup, out))
    (out / "notes.txt").write_text("mine")
    (out / "pose_check").mkdir()
    (out / "pose_check" / "pose_check.json").write_text("{}")
    first = _image_files(out)
    main(args(setup, out))
    assert (out / "notes.txt").read_text() == "mine" and (out / "pose_check" / "pose_check.json").is_file()
    assert _image_files(out) == first and "kept 2 entries that no evaluation wrote: notes.txt, pose_check" in \
        capsys.readouterr().out
    (out / ".evaluation_outputs.json").unlink()  # a folder written before the manifest: the known outputs go
    main(args(setup, out))
    assert (out / "notes.txt").is_file() and _image_files(out) == first


def test_a_folder_that_is_not_an_evaluation_is_refused(setup, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=f"inference_out_dir={tmp_path}: .*not an evaluation's output"):
        main(args(setup, tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_output_path_that_is_a_file_is_one_line(setup, tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("x")
    with pytest.raises(SystemExit, match=f"^error: inference_out_dir={path}: is a file"):
        main(args(setup, path))


def test_unwritable_output_folder_is_one_line(setup, tmp_path, monkeypatch):
    """Root ignores permission bits, so the refusal to create the folder is simulated."""
    real_mkdir = Path.mkdir

    def refuse(self, *a, **k):
        if self.name.endswith(".partial"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SystemExit, match=f"^error: inference_out_dir={tmp_path / 'out'}: .*Permission denied"):
        main(args(setup, tmp_path / "out"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_parent_is_one_line(setup, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=f"^error: inference_out_dir={parent / 'out'}: .*not writable"):
            main(args(setup, parent / "out"))
    finally:
        parent.chmod(0o755)


class _Script(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inside, self.scripts, self.comments = False, [], []

    def handle_starttag(self, tag, attrs):
        self.inside = tag == "script"
        if self.inside:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self.inside = False if tag == "script" else self.inside

    def handle_data(self, data):
        if self.inside:
            self.scripts[-1] += data

    def handle_comment(self, data):
        self.comments.append(data)


def _nasty_gallery(tmp_path) -> tuple[Path, list[dict]]:
    rows = [{"scene": name, "scene_name": name, "target": 0, "frame": 3, "psnr": 20.0, "inputs": ["a.png"],
             "gt": "b.png", "render": "c.png", "error": "d.png"}
            for name in (NASTY, "</script><b>x", "a & b \u2028 <!-- c", "plain")]
    return write_gallery_page(tmp_path, rows, title=NASTY, header={"scene_list": NASTY}), rows


def test_gallery_survives_any_scene_name(tmp_path):
    page, rows = _nasty_gallery(tmp_path)
    parser = _Script()
    parser.feed(page.read_text())
    assert len(parser.scripts) == 1 and not parser.comments  # one whole script, nothing turned into a comment
    script = parser.scripts[0]
    assert "<" not in script.split("function esc")[0]  # the inlined JSON has no raw <
    assert json.loads(script.split("const DATA = ", 1)[1].split(";\n", 1)[0]) == rows


def _chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary")
def test_gallery_renders_in_headless_chromium(tmp_path):
    page, rows = _nasty_gallery(tmp_path)
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    body = dom.split('<tbody id="rows">', 1)[1].split("</tbody>", 1)[0]
    assert body.count("<tr>") == len(rows)
    assert "&lt;!--&lt;script&gt;x&lt;/script&gt;" in body and "plain" in body


def test_index_oddities_are_reported(setup, tmp_path):
    """A scene listed twice is left out and named; more targets than scored, and targets that are also
    inputs, are counted and warned about."""
    index = _index(setup)
    keys = [k for k, v in index.items() if v is not None]
    text = json.dumps(index)[:-1] + f', "{keys[0]}": {json.dumps(index[keys[0]])}' + "}"  # keys[0] twice
    first = index[keys[1]]
    index[keys[1]] = {"context": first["context"], "target": first["target"] + [first["context"][0] + 1] * 4}
    index[keys[2]] = {"context": index[keys[2]]["context"], "target": list(index[keys[2]]["context"])}
    path = tmp_path / "index.json"
    path.write_text(text.replace(json.dumps(_index(setup)[keys[1]]), json.dumps(index[keys[1]]), 1)
                    .replace(json.dumps(_index(setup)[keys[2]]), json.dumps(index[keys[2]]), 1))
    with pytest.warns(UserWarning) as record:
        summary = main(args(setup, tmp_path / "out", index=path))
    messages = " ".join(str(w.message) for w in record)
    assert "list more targets than num_target_views" in messages and "also an input frame" in messages
    counts = summary["counts"]
    assert counts["listed_twice_in_index"] == 1 and counts["more_targets_than_scored"] == 1
    assert counts["targets_among_inputs"] == 1
    assert "more than once" in {f["scene"]: f["reason"] for f in summary["failed"]}[keys[0]]
