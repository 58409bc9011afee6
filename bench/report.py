"""Results: the JSON record, the Markdown table with ratios and targets, the fan-out chart."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import latency, transfers
from bench.common import OURS, Comparison, Measurement

MIB = 1024 * 1024


@dataclass
class Target:
    name: str
    limit: str
    value: float | None
    met: bool | None
    detail: str


def _find(comps: list[Comparison], section: str, scenario: str) -> Comparison | None:
    return next((c for c in comps if c.section == section and c.scenario == scenario), None)


def _median(comp: Comparison | None, tool: str) -> float | None:
    m = comp.get(tool) if comp else None
    return m.median if m else None


def targets(comps: list[Comparison]) -> list[Target]:
    """The issue's targets, each judged from this run's medians."""
    out: list[Target] = []
    lat = _find(comps, "latency", "run `true` on an open connection")
    ours, raw, ssh = _median(lat, OURS), _median(lat, latency.RAW_NODELAY), _median(lat, latency.SSH)
    if ours and raw:
        r = ours / raw
        out.append(Target("run(\"true\") vs raw paramiko + TCP_NODELAY", "≤ 1.3×", r, r <= 1.3,
                          f"{ours * 1e3:.2f} ms vs {raw * 1e3:.2f} ms"))
    if ours and ssh:
        r = ssh / ours
        out.append(Target("run(\"true\") faster than ssh per command", "≥ 20×", r, r >= 20,
                          f"{ours * 1e3:.2f} ms vs {ssh * 1e3:.1f} ms"))
    fan = _find(comps, "fanout", "uname -a on 50 hosts")
    if fan:
        peers = [m for m in fan.measurements if m.tool != OURS and m.median]
        mine = _median(fan, OURS)
        if peers and mine:
            best = min(peers, key=lambda m: m.median or 0)
            assert best.median is not None
            r = mine / best.median
            out.append(Target("fan-out to 50 hosts vs fastest peer", "≤ 1.0×", r, r <= 1.0,
                              f"{mine:.2f} s vs {best.tool} {best.median:.2f} s"))
    for direction in ("send", "get"):
        big = _find(comps, "transfer", f"{direction} 100 MiB")
        mine, scp = _median(big, OURS), _median(big, transfers.SCP)
        if mine and scp:
            r = scp / mine  # throughput ratio
            out.append(Target(f"100 MiB {direction} throughput vs scp", "≥ 0.8×", r, r >= 0.8,
                              f"{100 * MIB / mine / 1e6:.0f} MB/s vs {100 * MIB / scp / 1e6:.0f} MB/s"))
    start = _median(_find(comps, "startup", "autoserv --help"), OURS)
    if start:
        out.append(Target("autoserv --help", "≤ 0.3 s", start, start <= 0.3, f"{start:.3f} s"))
    guest = _find(comps, "guest", "qemu start → SSH usable")
    gap = _median(guest, "wait_up − banner")
    if gap is not None:
        out.append(Target("guest wait_up() after SSH answers", "≤ 0.3 s", gap, gap <= 0.3, f"{gap:.3f} s"))
    return out


def _fmt(m: Measurement) -> str:
    if m.median is None:
        return "—"
    v = m.median
    if v < 0.1:
        return f"{v * 1e3:.2f} ms"
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def _extra(comp: Comparison, m: Measurement) -> str:
    bits = []
    if "bytes" in m.extra and m.median:
        bits.append(f"{m.extra['bytes'] / m.median / 1e6:.1f} MB/s")
    for key, label in (("peak_pss_kib", "peak PSS"), ("maxrss_kib", "max RSS")):
        vals = sorted(m.extra.get(key) or [])
        if vals:
            bits.append(f"{label} {vals[len(vals) // 2] / 1024:.0f} MiB")
    if m.note:
        bits.append(m.note)
    if m.error:
        bits.append(f"**failed**: {m.error}")
    return "; ".join(bits)


def markdown(comps: list[Comparison], meta: dict[str, Any]) -> str:
    lines = [f"# autoserv benchmark — {meta['date']}", ""]
    lines.append(f"Machine: {meta['machine']}. Command: `{meta['command']}`. "
                 f"Whole run {meta['elapsed']:.0f} s. Ratio = ours ÷ peer of the medians "
                 "(time: below 1 means autoserv is faster).")
    lines += ["", "## Targets", "", "| target | limit | this run | met | detail |", "|---|---|---|---|---|"]
    for t in targets(comps):
        met = "—" if t.met is None else ("yes" if t.met else "**no**")
        value = "—" if t.value is None else f"{t.value:.2f}"
        lines.append(f"| {t.name} | {t.limit} | {value} | {met} | {t.detail} |")
    lines += ["", "## Medians and ratios", "",
              "| section | scenario | tool | trials | median | ours ÷ this | notes |",
              "|---|---|---|---|---|---|---|"]
    for comp in comps:
        ratios = comp.ratios()
        for m in comp.measurements:
            ratio = f"{ratios[m.tool]:.2f}" if m.tool in ratios else ""
            tool = f"**{m.tool}**" if m.tool == comp.ours else m.tool
            lines.append(f"| {comp.section} | {comp.scenario} | {tool} | {len(m.values)} | {_fmt(m)} "
                         f"| {ratio} | {_extra(comp, m)} |")
    lines.append("")
    return "\n".join(lines)


def chart(comps: list[Comparison], path: Path) -> None:
    """Fan-out wall time and controller memory against the number of hosts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fan = [c for c in comps if c.section == "fanout"]
    if not fan:
        return
    sizes = [int(c.scenario.split()[3]) for c in fan]
    tools = [m.tool for m in fan[0].measurements]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for tool in tools:
        xs, ts, mem = [], [], []
        for n, c in zip(sizes, fan, strict=True):
            m = c.get(tool)
            if m and m.median:
                xs.append(n)
                ts.append(m.median)
                pss = sorted(m.extra.get("peak_pss_kib") or [0])
                mem.append(pss[len(pss) // 2] / 1024)
        style = {"linewidth": 2.5} if tool == OURS else {"linewidth": 1.2}
        ax_t.plot(xs, ts, marker="o", label=tool, **style)
        ax_m.plot(xs, mem, marker="o", label=tool, **style)
    ax_t.set(xlabel="hosts", ylabel="wall time, median (s)", title="fan-out: uname -a on N netns hosts")
    ax_m.set(xlabel="hosts", ylabel="peak PSS of the process tree (MiB)", title="controller memory")
    for ax in (ax_t, ax_m):
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(comps: list[Comparison], meta: dict[str, Any], outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    stem = outdir / meta["date"]
    data = {
        "meta": meta,
        "targets": [t.__dict__ for t in targets(comps)],
        "comparisons": [c.to_json() for c in comps],
    }
    json_path, md_path, png_path = (stem.with_suffix(s) for s in (".json", ".md", ".png"))
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md = markdown(comps, meta)
    if any(c.section == "fanout" for c in comps):
        md += f"\n![fan-out curve]({png_path.name})\n"
        chart(comps, png_path)
    md_path.write_text(md)
    return [p for p in (json_path, md_path, png_path) if p.exists()]


def machine() -> str:
    cpus = len(os.sched_getaffinity(0))
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / MIB:.0f} GiB"
    except OSError:
        pass
    return f"{platform.node()} ({platform.platform()}, {cpus} CPUs{mem}, Python {platform.python_version()})"

