"""Incremental novel view synthesis demo (gradio): add and remove input views, render any camera.

    python app.py                        # the shipped showcase model on its held-out synthetic rooms
    python app.py --checkpoint ckpt.pt --data data/test/full_list.txt --scene 0 [--config cfg.yaml]
                  [--max_views 16] [--port 7860] [--host 127.0.0.1]

Without --checkpoint the demo opens on the shipped showcase model (checkpoints/showcase.pt); without
--data, on the held-out scenes of the checkpoint's own data settings (a showcase checkpoint records
them), generated into experiments/showcase/data the first time.

Tick candidate views to make them inputs: Efficient-LVSM encodes only the view just ticked and
appends it to its SceneCache (unticking removes its keys and values); LVSM models re-encode every
input at each render. The target is a candidate view (compare with its image) or a point on a path
through all candidates. A table lists every step's wall time and cache size (demo/session.py).

    python app.py --stream [--data walks/test/full_list.txt]   # stream mode (Efficient-LVSM)

Stream mode: the scene's frames arrive one at a time into a scene cache under a budget (every 4th
frame held out as a target): a policy (all, recent, sink_recent, coverage, attention), a budget in
views, per-render selection of the k nearest views and the cache's storage precision, their defaults
from the config's inference.cache; the views the cache holds are shown as a strip, with the cost
table (add and render ms, views held and attended, cache MiB). API names: stream_restart,
stream_add, stream_show.

gradio is the optional extra `demo` (`EXTRAS=demo bash scripts/setup.sh`, or
`pip install -c constraints.txt -e ".[demo]"`), imported only by main, so parse_args needs nothing.
The UI's events have API names (`set_inputs`, `show`), so a script drives it through gradio_client
(tests/test_demo_app.py does).

The server binds to 127.0.0.1 unless --host says otherwise (0.0.0.0 exposes it to the network).
"""

import argparse
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
SCENES_DIR = Path(__file__).resolve().parent / "experiments" / "showcase" / "data"  # held-out scenes when no --data
DISPLAY_MIN = 256  # renders smaller than this (pixels, shorter side) are shown enlarged by a whole factor


def enlarge(image):
    """uint8 [h, w, 3] repeated by the whole factor that brings its shorter side to DISPLAY_MIN or more
    (nearest neighbour: every rendered pixel stays one flat block, nothing is interpolated)."""
    factor = max(1, -(-DISPLAY_MIN // min(image.shape[:2])))
    return image.repeat(factor, 0).repeat(factor, 1)
INSTALL_HINT = ("app.py needs gradio, the optional extra 'demo': EXTRAS=demo bash scripts/setup.sh "
                "(or pip install -c constraints.txt -e \".[demo]\")")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="showcase", help="model checkpoint or released name (default: showcase, "
                   "the model shipped in checkpoints/)")
    p.add_argument("--random_weights", action="store_true", help="no checkpoint: random weights (UI smoke tests)")
    p.add_argument("--config", default=None, help="YAML config; default: the one the checkpoint holds")
    p.add_argument("--data", default=None, help="scene list file (full_list.txt); default: the held-out scenes of "
                   "the checkpoint's data settings (showcase checkpoints record them)")
    p.add_argument("--scene", default="0", help="scene name (JSON file stem) or index in the list")
    p.add_argument("--max_views", type=int, default=None, help="candidate views, spread evenly over the scene "
                   "(default: 16; in stream mode all frames)")
    p.add_argument("--stream", action="store_true", help="stream mode: frames arrive one by one into a budgeted cache")
    p.add_argument("--trajectory_frames", type=int, default=60, help="points on the path slider")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind; 0.0.0.0 serves the whole network")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--build_only", action="store_true", help="build the UI and exit without serving (a smoke test)")
    return p.parse_args(argv)


def build_session(args):
    """The DemoSession for the scene and model the arguments name, with two views already added."""
    import torch

    from demo.session import DemoSession, load_scene
    from evaluation.checkpoint import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = None if args.random_weights else args.checkpoint
    model, cfg, ckpt = load_model(checkpoint, args.config, device)
    if checkpoint is None:
        print("warning: --random_weights: renders are noise, costs are real")
    max_views = args.max_views if args.max_views is not None else (None if args.stream else 16)
    scene = load_scene(cfg, args.data or default_scenes(ckpt, checkpoint), args.scene, max_views=max_views)
    if args.stream:
        from demo.session import StreamSession
        from model.stream import CacheBudget
        session = StreamSession(model, scene, CacheBudget.from_config(cfg.inference.cache))
        session.add_next(2)
        return session
    session = DemoSession(model, scene, amp=device == "cuda")
    session.set_inputs(sorted({0, scene.num_views // 2}))
    return session


def default_scenes(ckpt, checkpoint) -> str:
    """The held-out scene list of the data settings a checkpoint records (`data`, as showcase.pt does),
    generated into SCENES_DIR if missing; an error when it records none."""
    from data import synthetic

    if not ckpt or not isinstance(ckpt.get("data"), dict):
        raise SystemExit(f"error: --data is needed: {checkpoint or 'a random model'} records no data settings")
    synthetic.generate_from_settings(SCENES_DIR, ckpt["data"], train=False)
    return str(SCENES_DIR / "test" / "full_list.txt")


def build_ui(session, gr, trajectory_frames: int = 60):
    """The gradio Blocks of a DemoSession: candidate gallery, input checkboxes, target, render, cost table."""
    import pandas as pd  # a gradio dependency

    from utils.images import to_uint8
    from utils.metrics import psnr

    scene = session.scene
    path_c2w, path_k = session.trajectory(trajectory_frames)
    labels = [f"view {i} (frame {f})" for i, f in enumerate(scene.frames)]

    def table():
        return pd.DataFrame(session.cost_table())

    def show(target_kind, view, t):
        if not session.inputs:
            return None, None, "Tick at least one input view.", table()
        if target_kind == "candidate view":
            if view is None:
                return None, None, "Pick a candidate view to render.", table()
            view = int(view)
            render, cost = session.render_views([view])
            truth = enlarge(to_uint8(scene.images[view]))
            note = " (an input view)" if view in session.inputs else " (held out)"
            info = f"view {view}{note}: PSNR {float(psnr(render[0], scene.images[view])):.2f} dB"
        else:
            k = int(t)
            render, cost = session.render(path_c2w[k:k + 1], path_k[k:k + 1])
            truth, info = None, f"path point {k} of {trajectory_frames}"
        info += (f"; inputs {session.inputs}; render {cost.wall_ms:.1f} ms ({cost.mode}), "
                 f"cache {cost.cache_bytes / 2**20:.2f} MiB")
        return enlarge(to_uint8(render[0])), truth, info, table()

    def set_inputs(selected, target_kind, view, t):
        session.set_inputs(sorted(int(i) for i in selected))
        return show(target_kind, view, t)

    with gr.Blocks(title="Efficient-LVSM incremental demo") as demo:
        gr.Markdown(f"## Scene `{scene.name}`: {scene.num_views} candidate views, model mode **{session.mode}**")
        gr.Gallery(value=[(to_uint8(img), lab) for img, lab in zip(scene.images, labels)], label="candidate views",
                   columns=8, height=220)
        inputs = gr.CheckboxGroup(choices=[(lab, i) for i, lab in enumerate(labels)], value=list(session.inputs),
                                  label="input views (tick to add: encodes that view only; untick to remove)")
        with gr.Row():
            target_kind = gr.Radio(["candidate view", "path"], value="candidate view", label="target")
            view = gr.Dropdown(choices=[(lab, i) for i, lab in enumerate(labels)], value=1 % scene.num_views,
                               label="candidate view")
            t = gr.Slider(0, trajectory_frames - 1, value=0, step=1, label="position on the path through all views")
        with gr.Row():
            # PNG, not gradio's default WebP: lossless, so what the page shows is what the model rendered.
            render = gr.Image(label="render", type="numpy", format="png", height=320)
            truth = gr.Image(label="ground truth (candidate view targets)", type="numpy", format="png", height=320)
        info = gr.Markdown()
        costs = gr.Dataframe(value=table(), label="step costs (wall ms, cache bytes)", interactive=False)
        outputs = [render, truth, info, costs]
        inputs.change(set_inputs, [inputs, target_kind, view, t], outputs, api_name="set_inputs")
        for i, control in enumerate((target_kind, view, t)):  # one API endpoint, "show"; the others are its copies
            control.change(show, [target_kind, view, t], outputs, api_name="show" if i == 0 else None,
                           api_visibility="public" if i == 0 else "undocumented")
        demo.load(show, [target_kind, view, t], outputs)
    return demo


def build_stream_ui(session, gr):
    """The gradio Blocks of a StreamSession: budget controls, stream buttons, held views, render, costs."""
    import pandas as pd  # a gradio dependency

    from model.cache import STORAGES
    from model.stream import POLICIES, CacheBudget
    from utils.images import to_uint8
    from utils.metrics import psnr

    scene, b = session.scene, session.budget
    labels = {i: f"view {i} (frame {f})" for i, f in enumerate(scene.frames)}

    def strip():
        return [(to_uint8(scene.images[i]), labels[i]) for i in session.held]

    def show(view):
        table = pd.DataFrame(session.history)
        if view is None or session.stream.cache is None:
            return None, None, "Stream a view first, and pick a target.", strip(), table
        view = int(view)
        render, row = session.render_views([view])
        kind = "held out" if view in session.held_out else ("held in the cache" if view in session.held else
                                                            "streamed, evicted" if view in session.candidate.values()
                                                            else "not streamed yet")
        info = (f"view {view} ({kind}): PSNR {float(psnr(render[0], scene.images[view])):.2f} dB; "
                f"{session.streamed} of {len(session.order)} views streamed, {row['views_held']} held, "
                f"{row['views_attended']} attended; render {row['wall_ms']:.1f} ms, cache {row['cache_mib']:.3f} MiB")
        return (enlarge(to_uint8(render[0])), enlarge(to_uint8(scene.images[view])), info, strip(),
                pd.DataFrame(session.history))

    def restart(policy, budget, select, storage, view):
        try:
            session.restart(CacheBudget(max_views=int(budget) or None if policy != "all" else None, policy=policy,
                                        select_views=int(select) or None, storage=storage))
        except ValueError as err:
            return None, None, f"**{err}**", strip(), pd.DataFrame(session.history)
        return show(view)

    def add(count, view):
        session.add_next(int(count))
        return show(view)

    with gr.Blocks(title="Efficient-LVSM stream demo") as demo:
        gr.Markdown(f"## Scene `{scene.name}` as a stream: {len(session.order)} views arrive in order, "
                    f"{len(session.held_out)} held out as targets")
        with gr.Row():
            policy = gr.Radio(list(POLICIES), value=b.policy, label="eviction policy")
            budget = gr.Slider(0, 64, value=b.max_views or 0, step=1, label="budget: views held (0: unbounded)")
            select = gr.Slider(0, 32, value=b.select_views or 0, step=1,
                               label="each render attends to the k nearest held views (0: all)")
            storage = gr.Dropdown(list(STORAGES), value=b.storage, label="cache storage")
        with gr.Row():
            again = gr.Button("restart the stream with these settings")
            one = gr.Button("next view")
            eight = gr.Button("next 8 views")
        held = gr.Gallery(value=strip(), label="views the cache holds", columns=16, height=140)
        view = gr.Dropdown(choices=[(labels[i] + (" (held out)" if i in session.held_out else ""), i)
                                    for i in range(scene.num_views)],
                           value=session.held_out[0] if session.held_out else 0, label="target view")
        with gr.Row():
            render = gr.Image(label="render", type="numpy", format="png", height=320)
            truth = gr.Image(label="ground truth", type="numpy", format="png", height=320)
        info = gr.Markdown()
        costs = gr.Dataframe(label="step costs", interactive=False)
        outputs = [render, truth, info, held, costs]
        again.click(restart, [policy, budget, select, storage, view], outputs, api_name="stream_restart")
        one.click(lambda v: add(1, v), [view], outputs, api_name="stream_add")
        eight.click(lambda v: add(8, v), [view], outputs, api_visibility="undocumented")
        view.change(show, [view], outputs, api_name="stream_show")
        demo.load(show, [view], outputs)
    return demo


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import gradio as gr
    except ImportError as err:
        raise SystemExit(f"{INSTALL_HINT}\n({err})") from None
    session = build_session(args)
    demo = build_stream_ui(session, gr) if args.stream else build_ui(session, gr, args.trajectory_frames)
    if args.build_only:
        mode = "stream" if args.stream else session.mode
        print(f"UI built for scene {session.scene.name} ({session.scene.num_views} views, {mode}); not serving")
        return
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
