"""The chart of `make bench`: bench/results/latest.json -> latest.png (run with the peers' venv python,
which has matplotlib; never a project dependency).

    bench/.peers/venv/bin/python bench/chart.py bench/results/latest.json bench/results/latest.png
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> None:
    with open(src) as f:
        data = json.load(f)
    results = data["results"]
    fanout = [r for r in results if r["scenario"] == "broadcast"]
    memory = [r for r in results if r["unit"] == "KiB/connection" and r["n"] < 100_000]
    ns = sorted({r["n"] for r in fanout})
    targets = list(dict.fromkeys(r["target"] for r in fanout))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    width = 0.8 / max(1, len(ns))
    for j, n in enumerate(ns):
        meds, lows, highs = [], [], []
        for t in targets:
            rates = [x["rate"] for r in fanout if r["target"] == t and r["n"] == n for x in r["rounds"]]
            med = statistics.median(rates) if rates else 0
            meds.append(med / 1000)
            lows.append((med - min(rates)) / 1000 if rates else 0)
            highs.append((max(rates) - med) / 1000 if rates else 0)
        xs = [i + (j - (len(ns) - 1) / 2) * width for i in range(len(targets))]
        ax.bar(xs, meds, width, yerr=[lows, highs], capsize=3, label=f"N = {n:,}")
        for x, m in zip(xs, meds, strict=True):
            ax.text(x, m, f"{m:.0f}k", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(targets)), targets, rotation=15)
    ax.set_ylabel("thousand deliveries / s (median, min-max bars)")
    ax.set_title("REST/HTTP-triggered broadcast, 100 B, to N idle WebSocket clients")
    ax.legend()
    ax = axes[1]
    names = [f"{r['target']}" for r in memory]
    values = [r["rounds"][0]["rate"] for r in memory]
    ax.barh(names, values, color="tab:gray")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    ax.axvline(10, color="tab:red", linestyle="--", label="target 10 KiB")
    ax.set_xlabel("KiB of server RSS per idle connection" + (f" (N = {memory[0]['n']:,})" if memory else ""))
    ax.set_title("Memory per idle connection")
    ax.legend(loc="lower right")
    fig.suptitle(data["command"], fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
