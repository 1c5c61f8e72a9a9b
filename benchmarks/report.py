"""results.md and latency.png from the harness's results dict."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.systems import REFERENCE, SYSTEMS


def _num(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return "n/a"
    if unit == "msgs/s" or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(fig: dict[str, Any] | None, unit: str) -> str:
    if not fig or not fig.get("n"):
        return "–"
    med = _num(fig["median"], unit)
    if fig["n"] == 1:
        return med
    return f"{med} ({_num(fig['min'], unit)}–{_num(fig['max'], unit)})"


def _ratio(x: float | None) -> str:
    if x is None or math.isnan(x) or math.isinf(x):
        return "–"
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def _ran(results: dict[str, Any]) -> list[str]:
    return [
        n
        for n, s in results["systems"].items()
        if s.get("available") and not s.get("failed") and s.get("figures")
    ]


def _strata(results: dict[str, Any]) -> list[str]:
    return [n for n in _ran(results) if getattr(SYSTEMS[n], "is_strata", False)]


def table(results: dict[str, Any]) -> str:
    """The main table: one row per figure, median (min–max) per system, and the ratios."""
    ran = _ran(results)
    strata = _strata(results)
    has_ref = REFERENCE in ran
    head = ["workload", "unit", *ran]
    for s in strata:
        if has_ref:
            head.append(f"{s} / {REFERENCE}")
        head.append("physical limit")
        head.append(f"{s} / limit")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    phys = results["physical"]["figures"]
    for spec in results["specs"]:
        if spec.get("group") == "objects":
            continue  # their own section, with their targets
        figs = [results["systems"][n]["figures"].get(spec["key"]) for n in ran]
        if not any(f and f.get("n") for f in figs):
            continue
        arrow = "↑" if spec["better"] == "higher" else "↓"
        row = [spec["label"], f"{spec['unit']} {arrow}", *(_cell(f, spec["unit"]) for f in figs)]
        for s in strata:
            cmp = results["comparison"].get(s, {}).get("figures", {}).get(spec["key"], {})
            if has_ref:
                row.append(_ratio(cmp.get("ratio_to_kafka")))
            lim = phys.get(spec["limit"]) if spec["limit"] else None
            row.append(f"{_num(lim['median'])} {lim['unit']}" if lim and lim["n"] else "–")
            row.append(_ratio(cmp.get("ratio_to_limit")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def physical_table(results: dict[str, Any]) -> str:
    lines = ["| physical limit | unit | median (min–max) |", "|---|---|---|"]
    for fig in results["physical"]["figures"].values():
        lines.append(f"| {fig['label']} | {fig['unit']} | {_cell(fig, fig['unit'])} |")
    return "\n".join(lines)


def disk_probe_table(results: dict[str, Any]) -> list[str]:
    """`run --disk-probe`: write+fdatasync by write size and mode (empty without it)."""
    probe = results["physical"].get("disk_probe")
    if not probe:
        return []
    lines = ["| write | MB/s | per write p50 / p99 (ms) |", "|---|---|---|"]
    rows = [(f"{int(k) >> 10} KiB append", r) for k, r in probe["append"].items()]
    rows += [
        ("1 MiB overwrite", probe["overwrite_1mib"]),
        ("4 KiB overwrite", probe["overwrite_4kib"]),
    ]
    for label, r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {label} | {_num(r['mb_per_s'])} | {_num(lat['p50'])} / {_num(lat['p99'])} |"
        )
    return ["## Disk probe", "", *lines, ""]


def _spec(results: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in results["specs"] if s["key"] == key)


def _context_for(results: dict[str, Any], key: str) -> list[str]:
    """Broker CPU and client CPU in the workload behind a figure, for each system (first rep)."""
    out = []
    workload, sub = None, None
    if key.startswith("produce_"):
        workload, sub = "produce", key.rsplit("_", 2)[0]
    elif key.startswith("tail_consume"):
        workload, sub = "produce", "tail_consume"
    elif key.startswith("e2e_latency"):
        workload = "latency"
    elif key.startswith("catchup"):
        workload = "catchup"
    elif key.startswith("txn_consume_"):
        workload, sub = "txn", "consume_" + key.removeprefix("txn_consume_").removesuffix("_mb_s")
    elif key.startswith("txn_"):
        workload, sub = "txn", "_".join(key.split("_", 2)[:2])
    for name in _ran(results):
        runs = results["systems"][name].get("runs", {}).get(workload or "", [])
        if not runs:
            continue
        d = runs[0].get(sub, {}) if sub else runs[0]
        if "broker_cpu_cores" not in d:
            continue
        clients = ", ".join(f"{c['cpu_cores'] * 100:.0f}%" for c in d.get("clients", []))
        main = d.get("broker_main_thread_cpu_cores")
        main_note = (
            f" (event-loop thread {main * 100:.0f}%)"
            if main is not None and getattr(SYSTEMS[name], "is_strata", False)
            else ""
        )
        out.append(
            f"{name}: broker CPU {d['broker_cpu_cores'] * 100:.0f}% of one core{main_note}, "
            f"client processes {clients or 'n/a'}, machine {d['machine_cpu_busy'] * 100:.0f}% busy"
            + (" (a client was CPU-bound)" if d.get("clients_cpu_bound") else "")
        )
    return out


def _max_other_cpu(node: Any) -> float:
    """The most CPU (in cores) other processes took during any workload below `node`."""
    if isinstance(node, dict):
        own = node.get("other_cpu_cores", 0.0)
        return max([own, *(_max_other_cpu(v) for v in node.values())])
    if isinstance(node, list):
        return max([0.0, *(_max_other_cpu(v) for v in node)])
    return 0.0


OBJECT_TARGETS = {
    "catchup_ratio_to_direct": (">=", 0.5),
    "object_puts_per_gib": ("<=", 100.0),
}


def _meets(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def objects_section(results: dict[str, Any], heading: str = "##") -> list[str]:
    """The object-store figures per Strata system, against their targets, with what explains
    them (bytes the broker fetched, request counts, upload sizes)."""
    names = [
        n
        for n in _strata(results)
        if any(k in results["systems"][n]["figures"] for k in OBJECT_TARGETS)
    ]
    if not names:
        return []
    keys = [
        "catchup_store_mb_s",
        "catchup_direct_mb_s",
        "catchup_ratio_to_direct",
        "object_puts_per_gib",
        "object_gets_per_gib",
        "object_ack_object_p50_ms",
        "object_ack_object_p99_ms",
        "object_ack_wal_p50_ms",
        "object_ack_wal_p99_ms",
    ]
    head = ["figure", "unit", *names, "target"]
    lines = [
        f"{heading} Object store",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for key in keys:
        spec = next((s for s in results["specs"] if s["key"] == key), None)
        if spec is None:
            continue
        figs = [results["systems"][n]["figures"].get(key) for n in names]
        if not any(f and f.get("n") for f in figs):
            continue
        target = ""
        if key in OBJECT_TARGETS:
            op, bound = OBJECT_TARGETS[key]
            met = [
                f"{n}: {'met' if _meets(f['median'], op, bound) else 'MISSED'}"
                for n, f in zip(names, figs, strict=True)
                if f and f.get("n")
            ]
            target = f"{'≥' if op == '>=' else '≤'} {bound:g} ({', '.join(met)})"
        arrow = "↑" if spec["better"] == "higher" else "↓"
        row = [spec["label"], f"{spec['unit']} {arrow}", *(_cell(f, spec["unit"]) for f in figs)]
        lines.append("| " + " | ".join([*row, target]) + " |")
    lines.append("")
    for name in names:
        runs = results["systems"][name].get("runs", {})
        for c in runs.get("catchup", [])[:1]:
            o = c.get("object_store")
            if not o:
                continue
            d = o["direct"]
            lines.append(
                f"- {name}, catch-up (first repetition): the broker fetched "
                f"{o['broker_fetched_bytes'] / 1e6:,.0f} MB from the store in "
                f"{o['broker_gets']:.0f} GETs, {o['fetched_over_objects']:.2f}× the "
                f"{d['objects']} objects' {d['bytes'] / 1e6:,.0f} MB (about 1: the read came from "
                f"the objects), in {c['seconds']:.1f} s; the direct read took {d['seconds']:.1f} s "
                f"in {d['requests']} GETs of up to {d['request_bytes'] >> 20} MiB, "
                f"{d['concurrency']} in flight, from {d['backend']}."
            )
        for o in runs.get("objects", [])[:1]:
            p = o.get("puts")
            if p:
                lines.append(
                    f"- {name}, PUTs per GiB (first repetition): {p['achieved_mb_per_s']:g} MB/s "
                    f"for {p['seconds']:g} s, then {p['settle_seconds']:g} s for the last "
                    f"upload and housekeeping every {p['housekeeping_ms']} ms; "
                    f"{p['ingested_bytes'] / (1 << 30):.2f} GiB in, {p['puts']:.0f} PUTs "
                    f"({p['uploads']:.0f} uploads, {p['compactions']:.0f} compactions, the "
                    f"rest catalog snapshots), {p['gets']:.0f} GETs, {p['deletes']:.0f} "
                    f"DELETEs; mean PUT {p['mean_put_bytes'] / (1 << 20):.1f} MiB; "
                    f"{p['objects']:.0f} objects at the end; upload interval "
                    f"{p['upload_interval_ms']}."
                )
            lat = o.get("latency_object")
            if lat:
                lines.append(
                    f"- {name}, --durability object: {lat['store_puts']:.0f} PUTs in "
                    f"{results['plan']['objects_latency_seconds']:g} s at "
                    f"{lat['achieved_mb_per_s']:g} MB/s (one upload per ack group); ack "
                    f"p99.9 {lat['ack_ms']['p999']:.1f} ms, max {lat['ack_ms']['max']:.1f} ms."
                )
    if results["mode"] == "smoke":
        lines.append(
            "- smoke run: token sizes and durations (a few MB, a second or two; the PUT count "
            "with --upload-interval-ms 1000 instead of the default 10 s), so these figures "
            "only show that the measurement works; see a full run for the real ones."
        )
    lines.append("")
    return lines


TXN_TARGETS = ("txn_100_mb_s", "txn_1000_mb_s")  # ≥ 1.0× Kafka


def txn_section(results: dict[str, Any], heading: str = "##") -> list[str]:
    """Issue 16's transaction targets, met or missed, per Strata system: transactional produce
    ≥ 1.0× Kafka, read_committed tail consume ≥ 0.9× read_uncommitted on the same data."""
    lines: list[str] = []
    for name in _strata(results):
        figs = results["systems"][name]["figures"]
        if "txn_read_committed_ratio" not in figs:
            continue
        cmp = results["comparison"].get(name, {}).get("figures", {})
        for key in TXN_TARGETS:
            ratio = cmp.get(key, {}).get("ratio_to_kafka")
            if ratio is None:
                continue
            lines.append(
                f"- {name}, {_spec(results, key)['label'].split(' (')[0]}: "
                f"{_ratio(ratio)} {REFERENCE} ({'met' if ratio >= 1.0 else 'MISSED'})"
            )
        rc = figs["txn_read_committed_ratio"]["median"]
        lines.append(
            f"- {name}, read_committed ÷ read_uncommitted: {rc:.2f} "
            f"({'met' if rc >= 0.9 else 'MISSED'}, target ≥ 0.9)"
        )
    if not lines:
        return []
    return [f"{heading} Transaction targets", "", *lines, ""]


def gaps_section(results: dict[str, Any]) -> list[str]:
    """Each Strata system's largest gap to the reference and what it is ahead on, then the CPU
    context of the gaps named, once per figure (not once per system)."""
    lines: list[str] = []
    context_keys: list[str] = []
    for name, cmp in results["comparison"].items():
        gap = cmp.get("largest_gap")
        if not gap:
            if REFERENCE in _ran(results) and cmp["gaps_ranked"]:
                lines += [f"{name} is at least as good as {REFERENCE} on every ranked figure.", ""]
            continue
        spec = _spec(results, gap["key"])
        lines.append(
            f"**Largest gap to {REFERENCE}** ({name}): {spec['label']}: "
            f"{_num(gap['value'], spec['unit'])} vs {_num(gap['kafka'], spec['unit'])} "
            f"{spec['unit']}, {gap['gap']:.1f}× "
            + ("slower" if spec["better"] == "lower" else "less")
            + "."
        )
        ahead = [k for k, g in cmp["gaps_ranked"] if g < 1]
        if ahead:
            lines += [
                "",
                f"- {name} is ahead of {REFERENCE} on: "
                + "; ".join(
                    f"{_spec(results, k)['label']} ({_spec(results, k)['unit']})" for k in ahead
                ),
            ]
        lines.append("")
        if gap["key"] not in context_keys:
            context_keys.append(gap["key"])
    for key in context_keys:
        context = _context_for(results, key)
        if context:
            lines += [f"CPU during {_spec(results, key)['label']}:", ""]
            lines += [f"- {c}" for c in context] + [""]
    return lines


def readme_section(results: dict[str, Any]) -> str:
    """The README's benchmark figures (between its markers): one table per kind, headings one
    level under the README's `## Benchmarks`, nothing repeated."""
    env = results["environment"]
    mount = results["physical"]["mount"]
    reps = results["plan"]["reps"]
    lines = [
        f"Latest {results['mode']} run, {results['started'][:10]}: {env['cpu_model']}, "
        f"{env['cpus']} CPUs, {env['memory_gib']} GiB RAM, data dir on {mount['device']} "
        f"({mount['fstype']}), Linux {env['kernel']}, Python {env['python']}, librdkafka "
        f"{env['librdkafka']}, {env['java'] or 'no Java'}; Strata at {env['git_commit']}, "
        f"{results['seconds'] / 60:.0f} minutes in all:",
        "",
        f"    {results['command']}",
        "",
        f"Median of {reps} repetition{'s' if reps != 1 else ''} (min–max); ↑ higher is better, "
        "↓ lower is better; MB = 10^6 bytes.",
        "",
        "### Results",
        "",
        table(results),
        "",
        *objects_section(results, heading="###"),
        *txn_section(results, heading="###"),
        *gaps_section(results),
        "### Physical limits (same run)",
        "",
        physical_table(results),
        "",
    ]
    return "\n".join(lines).rstrip() + "\n"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    phys = results["physical"]
    mount = phys["mount"]
    reps = results["plan"]["reps"]
    lines = [
        f"# Strata vs Apache Kafka: {results['mode']} run, {results['started']}",
        "",
        f"Reproduce: `{results['command']}` (took {results['seconds']:.0f} s).",
        "",
        f"Machine: {env['cpu_model']}, {env['cpus']} CPUs, {env['memory_gib']} GiB RAM, "
        f"Linux {env['kernel']}; data dir on {mount['device']} ({mount['fstype']}); "
        f"Python {env['python']}, librdkafka {env['librdkafka']} (confluent-kafka "
        f"{env['confluent_kafka']}); {env['java'] or 'no Java'}. Strata at commit "
        f"{env['git_commit']}" + (" with local edits." if env["git_dirty"] else "."),
        "",
        f"Every figure is the median of {reps} repetition{'s' if reps != 1 else ''} with "
        "(min–max); ↑ higher is better, ↓ lower is better. MB = 10^6 bytes. Ratios are the "
        "Strata median over the other median: for ↓ rows a ratio above 1 means slower. "
        "Load generators: librdkafka (confluent-kafka) in "
        f"{results['plan']['producers']} producer / {results['plan']['consumers']} consumer "
        "processes, and Kafka's Java ProducerPerformance / ConsumerPerformance.",
        "",
        "## Systems",
        "",
    ]
    for name in results["systems_requested"]:
        s = results["systems"].get(name, {})
        if not s.get("available"):
            lines.append(f"- **{name}**: not run. {s.get('reason', '')}")
        elif s.get("failed"):
            first = " ".join(s["failed"].splitlines()[:2])
            lines.append(f"- **{name}**: FAILED: {first} (log tail in results.json)")
        else:
            startup = s.get("first_startup_seconds")
            extra = s.get("config", {}).get("extra_args")
            lines.append(
                f"- **{name}** {s.get('version', '')}: {s['description']}; started in "
                f"{startup:.1f} s; whole run {s['seconds']:.0f} s."
                + (f" Extra arguments: `{' '.join(extra)}`." if extra else "")
            )
        for note in s.get("notes", []):
            lines.append(f"  - {note}")
        for f in s.get("failures", []):
            lines.append(
                f"  - FAILED a {f['workload']} repetition (try {f['try']}), restarted: "
                f"{f['error'].splitlines()[0]}"
                + (f"; broker log: `{f['log_tail'][-1][:200]}`" if f["log_tail"] else "")
            )
        other = _max_other_cpu(s.get("runs", {}))
        if other >= 0.1:
            lines.append(
                f"  - other processes on the machine took up to {other * 100:.0f}% of a core "
                "during a workload (noise in these figures)"
            )
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    lines += ["", "## Results", "", table(results), ""]
    lines += objects_section(results)
    lines += txn_section(results)
    lines += gaps_section(results)
    lines += ["## Physical limits (same run)", "", physical_table(results), ""]
    lines += disk_probe_table(results)
    lines += ["## Skipped", ""]
    for key, why in results.get("skipped", {}).items():
        lines.append(f"- {key.replace('_', '-')}: {why}")
    for name, s in results["systems"].items():
        if not s.get("available"):
            lines.append(f"- {name}: {s.get('reason', '')}")
    lines.append("")
    for name in _ran(results):
        profs = results["systems"][name].get("profiles")
        if not profs:
            continue
        lines += [f"## py-spy of {name} (first repetition; profiling perturbs the figures)", ""]
        for workload, prof in profs.items():
            if "self" not in prof:
                continue
            lines.append(
                f"- {workload}: event-loop thread {prof['main_thread_samples']} samples, "
                f"{prof['main_thread_idle_share'] * 100:.0f}% idle; top self time: "
                + "; ".join(f"{fn} {share * 100:.0f}%" for fn, share in prof["self"][:6])
            )
        lines.append("")
    if results.get("plot"):
        lines += [f"![latency]({results['plot']})", ""]
    return "\n".join(lines)


def latency_plot(results: dict[str, Any], path: Path) -> Path | None:
    """End-to-end latency per system: p50/p99/p999 bars (min–max whiskers) and the spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [n for n in _ran(results) if "e2e_latency_p50_ms" in results["systems"][n]["figures"]]
    if not ran:
        return None
    qs = ("p50", "p99", "p999")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(ran)
    for i, name in enumerate(ran):
        figs = results["systems"][name]["figures"]
        med = [figs[f"e2e_latency_{q}_ms"]["median"] for q in qs]
        lo = [m - figs[f"e2e_latency_{q}_ms"]["min"] for q, m in zip(qs, med, strict=True)]
        hi = [figs[f"e2e_latency_{q}_ms"]["max"] - m for q, m in zip(qs, med, strict=True)]
        xs = [j + (i - (len(ran) - 1) / 2) * width for j in range(len(qs))]
        ax1.bar(xs, med, width, yerr=[lo, hi], capsize=3, label=name)
        for x, m in zip(xs, med, strict=True):
            ax1.annotate(f"{m:.1f}", (x, m), ha="center", va="bottom", fontsize=7)
        runs = results["systems"][name].get("runs", {}).get("latency", [])
        if runs:
            keys = list(runs[0]["e2e_quantiles_ms"])
            xq = [-math.log10(1 - float(k) / 100) for k in keys]
            ys = [sorted(r["e2e_quantiles_ms"][k] for r in runs)[len(runs) // 2] for k in keys]
            ax2.plot(xq, ys, marker="o", label=name)
            ax2.set_xticks(xq, [f"p{k}" for k in keys], fontsize=7)
    phys = results["physical"]["figures"]
    if phys.get("disk_sync_4k_p99_ms", {}).get("n"):
        ax1.axhline(
            phys["disk_sync_4k_p99_ms"]["median"],
            color="grey",
            ls="--",
            lw=0.8,
            label="4 KiB fdatasync p99",
        )
    ax1.set_xticks(range(len(qs)), qs)
    ax1.set_yscale("log")
    ax1.set_ylabel("ms (log)")
    rate = results["plan"]["latency_rate_mb"]
    ax1.set_title(f"end-to-end latency at {rate:g} MB/s (median, min–max)", fontsize=9)
    ax1.legend(fontsize=8)
    ax2.set_yscale("log")
    ax2.set_ylabel("ms (log)")
    ax2.set_title("latency by percentile (median of repetitions)", fontsize=9)
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
