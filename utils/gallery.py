"""An HTML gallery of renders that opens from disk: relative paths, sortable by any metric, paged.

    paths = save_scene_images(out_dir, record)          # per scene
    write_gallery_page(out_dir, rows, title=..., header={...})  # rows carry their image paths

Each record (evaluation.scenes.render_scenes) has its views saved as PNG under out_dir/images/<scene>/:
inputs, and per target the ground truth, the render and an error map (absolute difference, x4).
The page holds the rows as JSON and shows a page of them at a time, so thousands of scenes stay light.
"""

import hashlib
import html
import json
import os
from pathlib import Path

import torch
from PIL import Image

from utils.images import to_uint8

PAGE_SIZE = 50
ERROR_GAIN = 4.0  # error maps show |render - target| x 4: small errors stay visible


def save_png(image, path: Path) -> None:
    """[3, h, w] tensor in [0, 1] or a PIL image -> PNG, written whole then renamed into place."""
    if isinstance(image, torch.Tensor):
        image = Image.fromarray(to_uint8(image))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def save_scene_images(out_dir: Path, record: dict) -> dict:
    """Write a scene's PNGs; returns their paths relative to out_dir."""
    folder = Path("images") / scene_folder_name(record["scene"])
    (out_dir / folder).mkdir(parents=True, exist_ok=True)
    paths = {"inputs": [], "targets": [], "renders": [], "errors": []}
    for i, image in enumerate(record["inputs"]):
        save_png(image, out_dir / folder / f"input_{i}.png")
        paths["inputs"].append(f"{folder.as_posix()}/input_{i}.png")
    for i, (target, render) in enumerate(zip(record["targets"], record["render"])):
        error = ((render.float() - target.float()).abs() * ERROR_GAIN).clamp(0, 1)
        for kind, image in (("targets", target), ("renders", render), ("errors", error)):
            name = f"{kind[:-1]}_{i}.png"
            save_png(image, out_dir / folder / name)
            paths[kind].append(f"{folder.as_posix()}/{name}")
    return paths


def safe_name(name: str) -> str:
    """A scene or image name usable as a file or folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "scene"


def scene_folder_name(key: str) -> str:
    """A folder name for a scene key, distinct for distinct keys: the key itself when it is already a
    safe name, else its safe form plus a hash of the key (so `scene a` and `scene_a` never share one)."""
    safe = safe_name(key)
    if safe == key and not key.startswith("."):
        return key
    return f"{safe}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:10]}"


def json_for_script(value) -> str:
    """JSON safe to inline in a <script> element: every <, > and & (and the JS line separators) as
    \\u escapes, so no string in it can close the script or open a comment."""
    text = json.dumps(value)
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def write_gallery_page(out_dir: str | Path, entries: list[dict], title: str, header: dict) -> Path:
    """Write out_dir/index.html from rows that already carry their image paths (inputs, gt, render,
    error, and optionally video), relative to out_dir."""
    out_dir = Path(out_dir)
    metrics = [k for k, v in entries[0].items() if isinstance(v, float) and k != "frame"] if entries else []
    page = _TEMPLATE.format(title=html.escape(title), header=html.escape(json.dumps(header, indent=1)),
                            data=json_for_script(entries), metrics=json_for_script(metrics),
                            page_size=PAGE_SIZE)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }} img {{ width: 128px; image-rendering: pixelated; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px; text-align: center; }}
th.sort {{ cursor: pointer; background: #eef; }} pre {{ background: #f6f6f6; padding: 0.5em; }}
</style></head><body>
<h1>{title}</h1>
<details open><summary>Protocol and summary</summary><pre>{header}</pre></details>
<p>Sort by: <span id="sorters"></span> &nbsp; <span id="pager"></span></p>
<table><thead><tr><th>scene / target</th><th>inputs</th><th>ground truth</th><th>render</th>
<th>error x4</th><th>metrics</th></tr></thead><tbody id="rows"></tbody></table>
<script>
const DATA = {data};
const METRICS = {metrics};
const PAGE = {page_size};
let page = 0, key = null, desc = false;
function esc(s) {{ return String(s).replace(/[&<>"]/g, c => ({{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}})[c]); }}
function img(src) {{ return '<a href="' + esc(src) + '"><img loading="lazy" src="' + esc(src) + '"></a>'; }}
function render() {{
  const rows = DATA.slice();
  if (key) rows.sort((a, b) => (desc ? -1 : 1) * ((a[key] ?? -Infinity) - (b[key] ?? -Infinity)));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  document.getElementById("rows").innerHTML = rows.slice(page * PAGE, (page + 1) * PAGE).map(r =>
    "<tr><td>" + esc(r.scene) + (r.scene_name !== undefined && r.scene_name !== r.scene ? " (" + esc(r.scene_name) + ")" : "") + "<br>target " + r.target + " (frame " + r.frame + ")" +
    (r.video ? '<br><a href="' + esc(r.video) + '">video</a>' : "") + "</td><td>" +
    r.inputs.map(img).join("") + "</td><td>" + img(r.gt) + "</td><td>" + img(r.render) + "</td><td>" +
    img(r.error) + "</td><td>" + METRICS.map(m => esc(m) + ": " + (r[m] === null ? "n/a" : r[m].toFixed(3))).join("<br>") + "</td></tr>"
  ).join("");
  document.getElementById("pager").innerHTML = "page " + (page + 1) + " / " + pages + " (" + rows.length +
    " images) <button onclick='page=Math.max(0,page-1);render()'>prev</button>" +
    "<button onclick='page=page+1;render()'>next</button>";
}}
document.getElementById("sorters").innerHTML = METRICS.map(m =>
  "<button class='sort' onclick='desc = (key === \\"" + m + "\\") ? !desc : false; key = \\"" + m + "\\"; render()'>" +
  esc(m) + "</button>").join(" ");
render();
</script></body></html>
"""
