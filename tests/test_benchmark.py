"""The speed benchmark runs at its tiny size on the CPU and records every section with its environment."""

import csv

from scripts.benchmark import main


def test_benchmark_tiny_cpu(tmp_path, capsys):
    rows = main(["--size", "tiny", "--device", "cpu", "--runs", "1", "--warmup", "0",
                 "--out", str(tmp_path / "bench.csv"), "--plot", str(tmp_path / "bench.png")])
    sections = [(r["section"], r["model"]) for r in rows]
    assert sections.count(("full", "efficient_lvsm")) == 4 and sections.count(("incremental", "lvsm_decoder_only")) == 3
    assert sections.count(("train", "efficient_lvsm")) == 1 and len(rows) == 16 + 18
    assert all(r["median_ms"] > 0 and r["gflop"] > 0 for r in rows)
    written = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert len(written) == 34 and {"gpu", "driver", "torch", "dtype", "compile"} <= set(written[0])
    assert written[0]["gpu"] == "cpu" and written[0]["dtype"] == "fp32"
    # Incremental FLOPs: Efficient-LVSM's cost per added view stays flat, LVSM's grows with N.
    inc = {m: [r["gflop"] for r in rows if r["section"] == "incremental" and r["model"] == m] for m in
           ("efficient_lvsm", "lvsm_decoder_only")}
    assert inc["lvsm_decoder_only"][-1] > 2 * inc["lvsm_decoder_only"][0]
    assert inc["efficient_lvsm"][-1] < 1.5 * inc["efficient_lvsm"][0]
    assert "| full | efficient_lvsm |" in capsys.readouterr().out
    # Streams: a render attends to every view streamed, unless a budget or selection bounds it.
    render = {c: [(r["views_held"], r["views_attended"]) for r in rows
                  if r["section"] == "stream_render" and f", {c}," in r["setting"]] for c in ("all", "recent@8", "select@8")}
    assert render == {"all": [(8, 8), (32, 32), (128, 128)], "recent@8": [(8, 8)] * 3,
                      "select@8": [(8, 8), (32, 8), (128, 8)]}
