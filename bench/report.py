"""Results: the JSON record, the Markdown tables with ratios and targets, the fan-out chart."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import fanout, latency, transfers
from bench.common import OURS, OURS_THREADS, Comparison, Measurement

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


def hosts_of(comp: Comparison) -> int:
    """N of a fan-out scenario (``uname -a on N hosts``)."""
    return int(comp.scenario.split()[3])


def fanouts(comps: list[Comparison]) -> list[Comparison]:
    """The fan-out comparisons, by N."""
    return sorted((c for c in comps if c.section == "fanout"), key=hosts_of)


def _median_extra(m: Measurement | None, key: str, scale: float = 1.0) -> float | None:
    vals = (m.extra.get(key) or []) if m else []
    return statistics.median(vals) * scale if vals else None


def cpu_per_machine_ms(comp: Comparison, m: Measurement | None) -> float | None:
    """Median user + sys CPU of the tool's process tree per host, in ms."""
    return _median_extra(m, "cpu_s", 1e3 / hosts_of(comp))


def sshd_cpu_per_machine_ms(comp: Comparison, m: Measurement | None) -> float | None:
    """Median CPU of the hosts' sshd per host during the tool's runs, in ms."""
    return _median_extra(m, "sshd_cpu_s", 1e3 / hosts_of(comp))


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
    for fan in fanouts(comps):
        n = hosts_of(fan)
        best = fan.fastest_peer()
        if n not in (50, 250, 1000) or best is None or best.median is None:
            continue
        for tool, r in fan.ratios_to_fastest().items():
            label = "autoserv" if tool == OURS else "autoserv threads"
            wall = _median(fan, tool)
            assert wall is not None
            out.append(Target(f"fan-out to {n} hosts vs fastest peer, {label}", "≤ 1.0×", r, r <= 1.0,
                              f"{wall:.2f} s vs {best.tool} {best.median:.2f} s"))
        if n != 1000:
            continue
        for tool in (OURS, OURS_THREADS):
            label = "autoserv" if tool == OURS else "autoserv threads"
            cpu = cpu_per_machine_ms(fan, fan.get(tool))
            if cpu is not None:
                out.append(Target(f"controller CPU per machine at 1000 hosts, {label}", "≤ 10 ms", cpu,
                                  cpu <= 10, f"{cpu:.1f} ms"))
            pss, ref = (_median_extra(fan.get(t), "peak_pss_kib", 1 / 1024) for t in (tool, fanout.ASYNCSSH))
            if pss is not None and ref:
                out.append(Target(f"peak memory at 1000 hosts vs asyncssh, {label}", "≤ 2.0×", pss / ref,
                                  pss / ref <= 2.0, f"{pss:.0f} MiB vs {ref:.0f} MiB"))
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
    if m.extra.get("cpu_s"):
        bits.append(f"CPU {cpu_per_machine_ms(comp, m):.1f} ms/host")
    if m.extra.get("sshd_cpu_s"):
        bits.append(f"hosts' sshd {sshd_cpu_per_machine_ms(comp, m):.1f} ms/host")
    if m.extra.get("stragglers"):
        bits.append(f"{m.extra['stragglers']} processes outlived the tool (CPU not counted)")
    if m.extra.get("sshd_unreaped"):
        bits.append(f"{m.extra['sshd_unreaped']} sshd with sessions left (sshd CPU low)")
    for key, label in (("peak_pss_kib", "peak PSS"), ("maxrss_kib", "max RSS")):
        mib = _median_extra(m, key, 1 / 1024)
        if mib is not None:
            bits.append(f"{label} {mib:.0f} MiB")
    if m.note:
        bits.append(m.note)
    if m.error:
        bits.append(f"**failed**: {m.error}")
    return "; ".join(bits)


def _loadavg(meta: dict[str, Any]) -> str:
    if "loadavg_start" not in meta:
        return ""
    fmt = "/".join
    start = fmt(f"{v:.2f}" for v in meta["loadavg_start"])
    end = fmt(f"{v:.2f}" for v in meta["loadavg_end"])
    return f" Load average (1/5/15 min) {start} at the start, {end} at the end."


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def fanout_tables(comps: list[Comparison]) -> list[str]:
    """The fan-out curve: per N, ours and the fastest peer with the ratios and the floor; then
    every tool's wall time, controller CPU per machine, hosts' sshd CPU and memory."""
    fans = fanouts(comps)
    if not fans:
        return []
    lines = ["", "## Fan-out: autoserv against the fastest peer of the same run", "",
             "Wall time, median. CPU/host: user + sys CPU of the tool's whole process tree ÷ N. "
             "Floor: the hosts' own sshd CPU during the run ÷ the cores (the least of any tool), "
             "the wall time below which no tool can go on this machine.", "",
             "| N | sshd-CPU floor | fastest peer | autoserv | ÷ fastest | autoserv threads | ÷ fastest |",
             "|---|---|---|---|---|---|---|"]
    for fan in fans:
        best = fan.fastest_peer()
        floor = fan.get(fanout.FLOOR)
        ratios = fan.ratios_to_fastest()
        cells = [str(hosts_of(fan)), _s(floor.median if floor else None),
                 f"{best.tool} {_s(best.median)}, {_ms(cpu_per_machine_ms(fan, best))}/host" if best else "—"]
        for tool in (OURS, OURS_THREADS):
            m = fan.get(tool)
            cells.append(f"{_s(m.median)}, {_ms(cpu_per_machine_ms(fan, m))}/host" if m and m.median else "—")
            cells.append(f"**{ratios[tool]:.2f}**" if tool in ratios else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["",
              "| N | tool | trials | wall | ÷ fastest peer | CPU/host | hosts' sshd CPU/host | peak PSS |",
              "|---|---|---|---|---|---|---|---|"]
    for fan in fans:
        best = fan.fastest_peer()
        for m in fan.measurements:
            # a reference that ran as a tool (raw paramiko) has a ratio and CPU; the floor has not
            ran = not m.context or bool(m.extra.get("cpu_s"))
            ratio = ""
            if best and best.median and m.median and ran:
                ratio = f"{m.median / best.median:.2f}"
            pss = _median_extra(m, "peak_pss_kib", 1 / 1024)
            tool = f"**{m.tool}**" if m.tool in (fan.ours, *fan.variants) else m.tool
            if m is best:
                tool += " (fastest peer)"
            lines.append(f"| {hosts_of(fan)} | {tool} | {len(m.values)} | {_s(m.median)} | {ratio} "
                         f"| {_ms(cpu_per_machine_ms(fan, m)) if ran else ''} "
                         f"| {_ms(sshd_cpu_per_machine_ms(fan, m)) if ran else ''} "
                         f"| {'' if pss is None else f'{pss:.0f} MiB'} |")
    return lines


def markdown(comps: list[Comparison], meta: dict[str, Any]) -> str:
    lines = [f"# autoserv benchmark — {meta['date']}", ""]
    lines.append(f"Machine: {meta['machine']}. Command: `{meta['command']}`. "
                 f"Whole run {meta['elapsed']:.0f} s.{_loadavg(meta)} Ratio = ours ÷ peer of the medians "
                 "(time: below 1 means autoserv is faster).")
    lines += ["", "## Targets", "", "| target | limit | this run | met | detail |", "|---|---|---|---|---|"]
    for t in targets(comps):
        met = "—" if t.met is None else ("yes" if t.met else "**no**")
        value = "—" if t.value is None else f"{t.value:.2f}"
        lines.append(f"| {t.name} | {t.limit} | {value} | {met} | {t.detail} |")
    lines += fanout_tables(comps)
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
    """Fan-out wall time (with the sshd-CPU floor), controller CPU per host and controller
    memory against the number of hosts, every tool; log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    fan = fanouts(comps)
    if not fan:
        return
    sizes = [hosts_of(c) for c in fan]
    tools = list(dict.fromkeys(m.tool for c in fan for m in c.measurements))
    fig, (ax_t, ax_c, ax_m) = plt.subplots(1, 3, figsize=(15, 4.6))
    for tool in tools:
        xs, ts, cpu, xs_m, mem = [], [], [], [], []
        for c in fan:
            m = c.get(tool)
            if m and m.median:
                xs.append(hosts_of(c))
                ts.append(m.median)
                cpu.append(cpu_per_machine_ms(c, m))
                pss = _median_extra(m, "peak_pss_kib", 1 / 1024)
                if pss:
                    xs_m.append(hosts_of(c))
                    mem.append(pss)
        if tool == fanout.FLOOR:
            ax_t.plot(xs, ts, color="black", linestyle="--", marker="x", linewidth=2, label=tool)
            continue
        style = {"linewidth": 2.5} if tool in (OURS, OURS_THREADS) else {"linewidth": 1.2}
        ax_t.plot(xs, ts, marker="o", label=tool, **style)
        ax_c.plot(xs, cpu, marker="o", label=tool, **style)
        ax_m.plot(xs_m, mem, marker="o", label=tool, **style)
    ax_t.set(xlabel="hosts", ylabel="wall time, median (s)", title="fan-out: uname -a on N netns hosts")
    ax_c.set(xlabel="hosts", ylabel="user + sys CPU per host (ms)", title="controller CPU per host")
    ax_m.set(xlabel="hosts", ylabel="peak PSS of the process tree (MiB)", title="controller memory")
    for ax in (ax_t, ax_c, ax_m):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.grid(alpha=0.3, which="both")
    handles, labels = ax_t.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _minor_label(v: float, _pos: object) -> str:
    """Label the 2 and 5 of each decade on a log axis, leave the other minor ticks bare."""
    if v <= 0:
        return ""
    return f"{v:g}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""


def write(comps: list[Comparison], meta: dict[str, Any], outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    stem = outdir / meta.get("stem", meta["date"])
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

