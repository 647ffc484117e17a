#!/usr/bin/python3
"""Plots the benchmarks' own JSON output as PNGs for docs/benchmarks.md.

    /usr/bin/python3 benches/plot.py [--out docs/img] FILE.json...

Each FILE is what a benchmark wrote (target/bench/*.json); its "kind" picks
the plot. Needs Debian's python3-matplotlib (`bash scripts/apt-install.sh
python3-matplotlib`); the system interpreter, not a virtualenv's.
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def burst(report, title):
    """Instances alive, responses done and server memory against time; pings."""
    s = report["samples"]
    t = [x["t_ms"] for x in s]
    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    ax1.plot(t, [x["live_instances"] for x in s], label="instances alive", color="tab:blue")
    ax1.plot(t, [x["done"] for x in s], label="responses received", color="tab:green",
             linestyle="--")
    ax1.set_ylabel("count")
    ax2 = ax1.twinx()
    rss = [(x["rss_bytes"] or 0) / 2**20 for x in s]
    ax2.plot(t, rss, label="server RSS", color="tab:red", alpha=0.7)
    ax2.set_ylabel("server RSS (MiB)")
    lines = ax1.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    ax1.set_title(title)
    pings = [(p[0], p[1]) for p in report.get("ping_samples", []) if p[1] is not None]
    ax3.scatter([p[0] for p in pings], [p[1] for p in pings], s=4, color="tab:purple",
                label="ping (health) latency")
    ax3.set_yscale("log")
    ax3.set_ylabel("ping latency (ms)")
    ax3.set_xlabel("ms from go")
    ax3.axhline(10, color="grey", linestyle=":", label="10 ms")
    ax3.legend(loc="upper right")
    fig.tight_layout()
    return fig


def bars(report, title):
    """Grouped bars: report["series"] = {label: {metric: value}}, report["unit"]."""
    series = report["series"]
    metrics = report.get("metrics") or list(next(iter(series.values())).keys())
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(metrics))]
        ys = [values.get(m, 0) for m in metrics]
        b = ax.bar(xs, ys, width, label=label)
        ax.bar_label(b, fmt="%.3g", fontsize=8)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics)
    ax.set_ylabel(report.get("unit", ""))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


PLOTS = {"burst": burst, "bars": bars}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for path in args.files:
        with open(path) as f:
            report = json.load(f)
        kind = report.get("kind", "burst")
        if kind not in PLOTS:
            sys.exit(f"{path}: unknown kind {kind!r} (known: {', '.join(PLOTS)})")
        name = os.path.splitext(os.path.basename(path))[0]
        title = report.get("title") or name
        fig = PLOTS[kind](report, title)
        out = os.path.join(args.out, name + ".png")
        fig.savefig(out + ".tmp.png", dpi=110)
        os.replace(out + ".tmp.png", out)
        print(out)


if __name__ == "__main__":
    main()
