"""PNG charts of a run, written next to latest.json (matplotlib, the optional ``bench`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

DIRECT_COLOUR = "#7f7f7f"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
# A ceiling (bench.ceilings) is not a configuration: pale and hatched, never mistaken for one.
CEILING_COLOUR = "#e0e0e0"
CEILING_PREFIX = "ceiling_"


def write_charts(doc: dict[str, Any], out_dir: Path) -> tuple[list[str], str]:
    """The chart files written, and a note (why none were, when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (pip install '.[bench]'): no charts"
    makers: dict[str, Callable[[Any, dict[str, Any]], None]] = {
        "datapath": _datapath,
        "scaling": _scaling,
        "engines": _engines,
        "detectors": _detectors,
    }
    written = []
    for name, make in makers.items():
        scenario = doc["scenarios"].get(name)
        if not scenario or scenario["status"] != "ok":
            continue
        figure = plt.figure(figsize=(15 if name == "datapath" else 11, 4.8), dpi=110)
        try:
            make(figure, scenario)
            figure.suptitle(f"{scenario['title']} - {doc['finished_at'][:10]}, {doc['machine']['cpu_model']}")
            figure.tight_layout()
            path = out_dir / f"{name}.png"
            figure.savefig(path)
            written.append(path.name)
        finally:
            plt.close(figure)
    return written, ""


def _datapath(figure: Any, scenario: dict[str, Any]) -> None:
    runs = scenario["details"]["runs"]
    configs = list(dict.fromkeys(run["config"] for run in runs))
    levels = sorted({run["concurrency"] for run in runs})
    by_key = {(run["config"], run["concurrency"]): run for run in runs}
    throughput, *latency_axes = figure.subplots(1, 1 + len(levels), width_ratios=[1.3] + [1] * len(levels))
    width = 0.8 / len(configs)
    for index, config in enumerate(configs):
        colour = _config_colour(index, config)
        xs = [level_index + index * width for level_index in range(len(levels))]
        values = [by_key[config, level]["calls_per_s"] for level in levels]
        hatch = "//" if config.startswith(CEILING_PREFIX) else None
        bars = throughput.bar(xs, values, width, label=config, color=colour, hatch=hatch, edgecolor="#555555")
        for bar, level in zip(bars, levels, strict=True):
            direct = by_key["direct", level]["calls_per_s"]
            ratio = bar.get_height() / direct if direct else 0
            throughput.annotate(
                f"{ratio:.2f}x",
                (bar.get_x() + width / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    throughput.set_xticks([i + 0.4 - width / 2 for i in range(len(levels))], [f"c={c}" for c in levels])
    throughput.set_ylabel("calls/s (ratio to direct on the bars)")
    throughput.set_title("throughput")
    throughput.legend(fontsize=7, loc="upper left")
    colours = [_config_colour(i, c) for i, c in enumerate(configs)]
    for axis, level in zip(latency_axes, levels, strict=False):
        p50 = [by_key[c, level]["p50_ms"] for c in configs]
        p99 = [by_key[c, level]["p99_ms"] for c in configs]
        axis.barh(configs, p50, color=colours, label="p50")
        axis.scatter(p99, configs, marker="|", s=200, color="black", label="p99")
        for y, value in enumerate(p50):
            axis.annotate(
                f"{value:.3g}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
            )
        _log_scale(axis, "x")
        axis.set_xlabel("ms (log): p50 bar, p99 mark")
        axis.set_title(f"latency, c={level}")
        axis.invert_yaxis()
        axis.legend(fontsize=7)
        if axis is not latency_axes[0]:
            axis.set_yticklabels([])


def _config_colour(index: int, config: str) -> str:
    if config == "direct":
        return DIRECT_COLOUR
    if config.startswith(CEILING_PREFIX):
        return CEILING_COLOUR
    return PALETTE[index % len(PALETTE)]


def _log_scale(axes: Any, *which: str) -> None:
    """Log scale with plain numbers (1, 10, 100) instead of 10^x and cluttered minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for name in which:
        getattr(axes, f"set_{name}scale")("log")
        axis = getattr(axes, f"{name}axis")
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())


def _scaling(figure: Any, scenario: dict[str, Any]) -> None:
    runs = scenario["details"]["runs"]
    per_call, per_row = figure.subplots(1, 2)
    for config, colour in (("direct", DIRECT_COLOUR), (runs[-1]["config"], PALETTE[0])):
        points = sorted((run["rows"], run["p50_ms"]) for run in runs if run["config"] == config)
        per_call.plot([p[0] for p in points], [p[1] for p in points], "o-", color=colour, label=config)
    _log_scale(per_call, "x", "y")
    per_call.set_xlabel("rows per call")
    per_call.set_ylabel("p50 ms per call")
    per_call.set_title("latency per call")
    per_call.legend(fontsize=8)
    for key, label, colour in (
        ("linearity", "added p50 latency", PALETTE[1]),
        ("linearity_cpu", "gateway CPU", PALETTE[2]),
    ):
        linear = scenario["details"].get(key, {})
        rows = [int(k) for k in linear.get("per_row_us", {})]
        values = list(linear.get("per_row_us", {}).values())
        per_row.plot(rows, values, "o-", color=colour, label=f"{label} ({linear.get('verdict')})")
        for x, y in zip(rows, values, strict=True):
            per_row.annotate(f"{y:.3g}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    _log_scale(per_row, "x", "y")
    per_row.set_xlabel("rows per call")
    per_row.set_ylabel("µs per row")
    per_row.set_title("gateway cost per row")
    per_row.legend(fontsize=8)


def _engines(figure: Any, scenario: dict[str, Any]) -> None:
    figures = [f for f in scenario["figures"] if f["id"].endswith("decisions_per_s")]
    axis = figure.subplots(1, 1)
    labels = [f["label"].removeprefix("decisions/s, ") for f in figures]
    positions = range(len(figures))
    axis.barh(
        [p - 0.2 for p in positions],
        [f["value"] for f in figures],
        0.4,
        label="default policy",
        color=PALETTE[0],
    )
    axis.barh(
        [p + 0.2 for p in positions],
        [f["baseline"]["value"] for f in figures],
        0.4,
        label="baseline (allow-all policy; for the cache: a miss)",
        color=DIRECT_COLOUR,
    )
    axis.set_yticks(list(positions), labels)
    axis.axvline(15_000, color="red", linestyle="--", linewidth=1, label="embedded target 15,000/s")
    _log_scale(axis, "x")
    axis.set_xlabel("decisions/s (log)")
    axis.invert_yaxis()
    axis.legend(fontsize=8)


def _detectors(figure: Any, scenario: dict[str, Any]) -> None:
    figures = scenario["figures"]
    axis = figure.subplots(1, 1)
    labels = [f["label"].removeprefix("scan, ") for f in figures]
    positions = range(len(figures))
    axis.barh(
        [p - 0.2 for p in positions], [f["value"] for f in figures], 0.4, label="detectors", color=PALETTE[2]
    )
    axis.barh(
        [p + 0.2 for p in positions],
        [f["baseline"]["value"] for f in figures],
        0.4,
        label="baseline: one plain regex",
        color=DIRECT_COLOUR,
    )
    axis.axvline(50, color="red", linestyle="--", linewidth=1, label="target 50 MB/s")
    axis.set_yticks(list(positions), labels)
    axis.set_xlabel("MB/s per core")
    axis.invert_yaxis()
    axis.legend(fontsize=8)
