"""The report's charts (``docs/img/bench-*.png``), drawn with matplotlib from the results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tables import result, sub, targets_with

__all__ = ["charts"]


def charts(res: dict[str, Any], img: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    img.mkdir(parents=True, exist_ok=True)
    made = []
    direct = result(res, "direct", "ttft") or {}
    names = [n for n in targets_with(res, "ttft") if n != "direct"]
    if names and direct:
        concs = sorted(direct, key=int)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        width = 0.8 / len(names)
        for ax, q in zip(axes, ("p50_ms", "p99_ms"), strict=True):
            for i, n in enumerate(names):
                d = result(res, n, "ttft") or {}
                added = [sub(d.get(c, {}).get(q), direct[c].get(q)) for c in concs]
                vals = [float("nan") if a is None else max(0.1, a) for a in added]
                ax.bar([j + i * width for j in range(len(concs))], vals, width, label=n)
            ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(concs))],
                          [f"{c} concurrent" for c in concs])
            ax.set_yscale("log")
            ax.set_title(f"TTFT added vs direct, {q[:3]} (ms, log)")
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "bench-ttft-overhead.png", dpi=110)
        plt.close(fig)
        made.append("bench-ttft-overhead.png")
    names = targets_with(res, "capacity")
    if names:
        caps = [(result(res, n, "capacity") or {}).get("capacity", 0) for n in names]
        lowest = [min((s["streams"] for s in (result(res, n, "capacity") or {}).get("steps", [])), default=0)
                  for n in names]
        fig, ax = plt.subplots(figsize=(9, 4))
        bars = ax.bar(names, caps, color=["#888" if n == "direct" else "#2a7" if n.startswith("ssegate")
                                          else "#c64" for n in names])
        for b, c, low in zip(bars, caps, lowest, strict=True):
            ax.annotate(str(c) if c else f"< {low}", (b.get_x() + b.get_width() / 2, c), ha="center",
                        va="bottom", fontsize=8)
        ax.set_ylabel("concurrent streams")
        ax.set_title("Capacity: streams at 40 tok/s with p99 added inter-token delay < 20 ms (one worker)")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(img / "bench-capacity.png", dpi=110)
        plt.close(fig)
        made.append("bench-capacity.png")
    names = [n for n in targets_with(res, "cpu") if n != "direct"]
    if names:
        concs = sorted({c for n in names for c in result(res, n, "cpu") or {}}, key=int)
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(concs)
        handles: list[Any] = []
        for i, c in enumerate(concs):
            cells = [((result(res, n, "cpu") or {}).get(c) or {}) for n in names]
            vals = [x.get("gateway_us") or 0 for x in cells]
            bars = ax.bar([j + i * width for j in range(len(names))], vals, width, color=f"C{i}")
            for b, x in zip(bars, cells, strict=True):
                if (x.get("delivered_pct") or 0) < 50:
                    b.set_hatch("//")
            handles.append(Patch(color=f"C{i}", label=f"{c} streams"))
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="saturated: < 50% delivered"))
        ax.set_xticks([j + width * (len(concs) - 1) / 2 for j in range(len(names))], names, rotation=20, ha="right")
        ax.set_ylabel("CPU µs per relayed event")
        ax.set_yscale("log")
        ax.set_title("Gateway CPU per relayed event (lower is better, log)")
        ax.legend(handles=handles)
        fig.tight_layout()
        fig.savefig(img / "bench-cpu.png", dpi=110)
        plt.close(fig)
        made.append("bench-cpu.png")
    return made
