"""Medians, ratios, targets and the markdown table of a benchmark run."""

from __future__ import annotations

import os
import statistics
from typing import Any

TIME_STEPS = ["ingest", "recommit", "list", "incremental", "restore", "verify", "init"]
MEM_STEPS = ["ingest", "recommit", "list", "incremental", "restore", "verify"]
LABELS = {"strongroom": "strongroom", "restic": "restic", "borg-lz4": "borg lz4", "borg-zstd3": "borg zstd3"}
LIST_CMD = {
    "strongroom": "`strongroom log`",
    "restic": "`restic snapshots`",
    "borg-lz4": "`borg list`",
    "borg-zstd3": "`borg list`",
}
VERIFY_CMD = {
    "strongroom": "`verify --full`",
    "restic": "`check --read-data`",
    "borg-lz4": "`check --verify-data`",
    "borg-zstd3": "`check --verify-data`",
}
MiB = 2**20


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ok(step: dict[str, Any] | None) -> bool:
    return step is not None and step.get("rc") == 0


def loaded(step: dict[str, Any]) -> bool:
    """Did other processes use more than 15 % of one core (and 0.1 s) while this step ran?"""
    f = float(step.get("foreign_cpu_seconds", 0.0))
    return f > 0.1 and f > 0.15 * float(step["seconds"])


def per_round(r: dict[str, Any]) -> tuple[dict[str, float], set[str]]:
    """The figures of one tool-round that are complete (failed steps are left out), and the time figures that
    were taken while other load ran on the machine."""
    out: dict[str, float] = {}
    dirty: set[str] = set()
    steps = r["steps"]
    for s in TIME_STEPS:
        if _ok(steps.get(s)):
            out[f"{s}_s"] = steps[s]["seconds"]
            if loaded(steps[s]):
                dirty.add(f"{s}_s")
    for s in MEM_STEPS:
        if _ok(steps.get(s)):
            out[f"{s}_peak_rss"] = steps[s]["peak_tree_rss"]
            out[f"{s}_max_single_rss"] = steps[s]["max_single_rss"]
    if all(_ok(steps.get(s)) for s in MEM_STEPS):
        out["peak_rss_all_steps"] = max(steps[s]["peak_tree_rss"] for s in MEM_STEPS)
    if "recommit_s" in out and "list_s" in out:
        out["recommit_minus_list_s"] = out["recommit_s"] - out["list_s"]
        if dirty & {"recommit_s", "list_s"}:
            dirty.add("recommit_minus_list_s")
    if "incremental_s" in out and "ingest_s" in out:
        out["incremental_pct_of_ingest"] = 100 * out["incremental_s"] / out["ingest_s"]
        if dirty & {"incremental_s", "ingest_s"}:
            dirty.add("incremental_pct_of_ingest")
    for k in ("repo_bytes_ingest", "repo_bytes_final", "cache_bytes", "mutated_bytes"):
        if k in r:
            out[k] = r[k]
    return out, dirty


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    raw_bytes = doc["meta"]["dataset"]["bytes"]
    summary: dict[str, Any] = {}
    for tool, rounds in doc["results"].items():
        pairs = [per_round(r) for r in rounds]
        rows = [p[0] for p in pairs]
        dirt = [p[1] for p in pairs]
        keys = sorted({k for row in rows for k in row})
        med: dict[str, Any] = {}
        used: dict[str, str] = {}
        for k in keys:
            vals = [row[k] for row in rows if k in row]
            clean = [row[k] for row, d in zip(rows, dirt, strict=True) if k in row and k not in d]
            # medians over the rounds without other load on the machine, when at least two of them are left
            pick = clean if len(clean) >= 2 or len(clean) == len(vals) else vals
            med[k] = _median(pick)
            if len(clean) < len(vals):
                used[k] = f"{len(pick)} of {len(vals)} rounds" + ("" if pick is clean else ", some under load")
        if med.get("ingest_s"):
            med["ingest_mb_s"] = raw_bytes / med["ingest_s"] / 1e6
        if med.get("restore_s") and med.get("mutated_bytes"):
            med["restore_mb_s"] = med["mutated_bytes"] / med["restore_s"] / 1e6
        if med.get("verify_s"):
            med["verify_mb_s"] = raw_bytes / med["verify_s"] / 1e6
        if med.get("repo_bytes_ingest"):
            med["repo_ratio_ingest"] = med["repo_bytes_ingest"] / raw_bytes
        summary[tool] = {
            "median": med,
            "rounds": rows,
            "loaded": [sorted(d) for d in dirt],
            "median_rounds_used": used,
        }
    return summary


# ---------------------------------------------------------------- formatting


def f_s(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"


def f_mb_s(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} MB/s"


def f_mib(v: float | None) -> str:
    return "—" if v is None else f"{v / MiB:,.1f} MiB"


def f_pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} %"


def ratio_time(sr: float | None, peer: float | None) -> str:
    """Lower is better: peer/strongroom."""
    if not sr or not peer:
        return "—"
    r = peer / sr
    return f"{r:.2f}× faster" if r >= 1 else f"{1 / r:.2f}× slower"


def ratio_rate(sr: float | None, peer: float | None) -> str:
    """Higher is better: strongroom/peer."""
    if not sr or not peer:
        return "—"
    r = sr / peer
    return f"{r:.2f}× peer's" if r >= 1 else f"{r:.2f}× peer's (lower)"


def ratio_size(sr: float | None, peer: float | None) -> str:
    """Lower is better: strongroom/peer."""
    if not sr or not peer:
        return "—"
    r = sr / peer
    return f"{r:.3f}× ({'smaller' if r < 1 else 'larger' if r > 1 else 'equal'})"


def render_markdown(doc: dict[str, Any]) -> str:
    meta, summary = doc["meta"], doc["summary"]
    tools = list(summary)
    peers = [t for t in tools if t != "strongroom"]
    med = {t: summary[t]["median"] for t in tools}
    sr = med.get("strongroom", {})
    raw = meta["dataset"]["bytes"]
    m = meta["machine"]
    lines: list[str] = []
    add = lines.append
    add(f"# strongroom benchmark: {meta['size_label']} dataset, seed {meta['seed']}")
    add("")
    add(
        f"Run {meta['started']}; medians of {meta['rounds']} rounds; tools alternate within each round "
        f"({', '.join(LABELS[t] for t in tools)}). Total wall time {meta.get('total_seconds', 0) / 60:.1f} min."
    )
    add("")
    add(
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_total_bytes'] / 2**30:.1f} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}"
    )
    v = meta["versions"]
    add(f"- Versions: strongroom {v['strongroom']}; {v['restic']}; {v['borg']}")
    ve = meta.get("versions_end")
    if ve and ve.get("strongroom") != v["strongroom"]:
        add(
            f"- ⚠ strongroom's source changed during the run (at the end: {ve['strongroom']}); "
            "rounds may have measured different code"
        )
    gs = meta["dataset"].get("gen_stats") or {}
    kinds = ", ".join(f"{k} {d['pct']} %" for k, d in (gs.get("by_kind") or {}).items())
    add(
        f"- Dataset: `gen_dataset.py generate --size {meta['size_label']} --seed {meta['seed']}`: "
        f"{meta['dataset']['files']:,} files, {raw:,} bytes ({kinds}); "
        f"mutation `gen_dataset.py mutate --round 1`"
    )
    w = meta.get("warmup") or {}
    if w:
        add(
            f"- Warm-up before timing: wrote and deleted {w['first_pass_bytes'] / 2**30:.1f} GiB at "
            f"{w['first_pass_mb_s']:,.0f} MB/s, then {w['second_pass_bytes'] / 2**30:.1f} GiB at "
            f"{w['second_pass_mb_s']:,.0f} MB/s (first-touch guest memory is slow on this VM)"
        )
    add("")
    add("## Results (medians)")
    add("")
    head = ["measure", *[LABELS[t] for t in tools], *[f"strongroom vs {LABELS[p]}" for p in peers]]
    add("| " + " | ".join(head) + " |")
    add("|" + "---|" * len(head))

    def cell(t: str, key: str, fmt: Any) -> str:
        note = summary[t]["median_rounds_used"].get(key)
        if note is None:
            return str(fmt(med[t].get(key)))
        return f"{fmt(med[t].get(key))} ({'⚠ ' if 'under load' in note else ''}{note})"

    def row(label: str, key: str, fmt: Any, ratio: Any | None) -> None:
        cells = [label, *[cell(t, key, fmt) for t in tools]]
        if peers:
            cells += [ratio(sr.get(key), med[p].get(key)) if ratio else "" for p in peers]
        add("| " + " | ".join(cells) + " |")

    row("initial ingest", "ingest_s", f_s, ratio_time)
    row("ingest throughput", "ingest_mb_s", f_mb_s, ratio_rate)
    row("no-change re-commit", "recommit_s", f_s, ratio_time)
    row("list versions (" + LIST_CMD["strongroom"] + " / snapshots / list)", "list_s", f_s, ratio_time)
    row("re-commit minus list", "recommit_minus_list_s", f_s, None)
    row("commit after mutation", "incremental_s", f_s, ratio_time)
    row("mutation commit / initial ingest", "incremental_pct_of_ingest", f_pct, None)
    row("full restore", "restore_s", f_s, ratio_time)
    row("restore throughput", "restore_mb_s", f_mb_s, ratio_rate)
    row(
        "full verify ("
        + VERIFY_CMD["strongroom"]
        + " / "
        + VERIFY_CMD["restic"]
        + " / "
        + VERIFY_CMD["borg-lz4"]
        + ")",
        "verify_s",
        f_s,
        ratio_time,
    )
    row("verify throughput (raw MB/s)", "verify_mb_s", f_mb_s, ratio_rate)
    row("repository after ingest (du -sb)", "repo_bytes_ingest", f_mib, ratio_size)
    row("repository ÷ raw data", "repo_ratio_ingest", lambda x: "—" if x is None else f"{x:.3f}", None)
    row("repository after 3 commits", "repo_bytes_final", f_mib, ratio_size)
    row("peak memory, ingest (tree RSS sum)", "ingest_peak_rss", f_mib, ratio_size)
    row("peak memory, any step (tree RSS sum)", "peak_rss_all_steps", f_mib, ratio_size)
    row("client cache + state (du -sb)", "cache_bytes", f_mib, None)
    row("init (not a target)", "init_s", f_s, ratio_time)
    add("")
    add(
        "Times are wall-clock from spawn to exit. Ratios in the time rows are peer time ÷ strongroom time "
        '("2.00× faster" = strongroom takes half the time); throughput rows are strongroom ÷ peer; size and memory '
        "rows are strongroom ÷ peer (below 1 = strongroom smaller). Throughput is raw dataset bytes "
        "(restore: the mutated version) per second, 1 MB = 10^6 bytes."
    )
    add("")

    # ------------------------------------------------------------ targets
    if "strongroom" in med and peers:
        add("## Targets (issue 2, measured here)")
        add("")
        add("| target | measured | met |")
        add("|---|---|---|")

        def target(name: str, measured: str, ok: bool | None) -> None:
            add(f"| {name} | {measured} | {'—' if ok is None else 'yes' if ok else '**no**'} |")

        def get(t: str, k: str) -> float | None:
            x = med.get(t, {}).get(k)
            return None if x is None else float(x)

        sri, rei, bli = get("strongroom", "ingest_mb_s"), get("restic", "ingest_mb_s"), get("borg-lz4", "ingest_mb_s")
        if sri and rei:
            target("ingest ≥ 3× restic's throughput", f"{sri / rei:.2f}×", sri / rei >= 3)
        if sri and bli:
            target("ingest ≥ 2.5× borg (lz4) throughput", f"{sri / bli:.2f}×", sri / bli >= 2.5)
        d = get("strongroom", "recommit_minus_list_s")
        if d is not None:
            target(
                "no-change re-commit < `strongroom log` + 1 s",
                f"{f_s(get('strongroom', 'recommit_s'))} vs log {f_s(get('strongroom', 'list_s'))} (+{d:.2f} s)",
                d < 1,
            )
        p = get("strongroom", "incremental_pct_of_ingest")
        if p is not None:
            target("commit after mutation < 5 % of initial ingest", f_pct(p), p < 5)
        srr, rer = get("strongroom", "restore_mb_s"), get("restic", "restore_mb_s")
        if srr and rer:
            target("restore ≥ 2× restic's throughput", f"{srr / rer:.2f}×", srr / rer >= 2)
        srv, rev = get("strongroom", "verify_s"), get("restic", "verify_s")
        if srv and rev:
            target("`verify --full` faster than `restic check --read-data`", f"{f_s(srv)} vs {f_s(rev)}", srv < rev)
        srs, res_ = get("strongroom", "repo_bytes_ingest"), get("restic", "repo_bytes_ingest")
        if srs and res_:
            target("repository ≤ restic's + 2 %", f"{srs / res_:.3f}× restic's", srs <= 1.02 * res_)
        pk = get("strongroom", "peak_rss_all_steps")
        if pk is not None:
            target("peak memory < 500 MiB", f_mib(pk), pk < 500 * MiB)
        add("")

    # ------------------------------------------------------------ memory by step
    add("## Peak memory by step (median of tree RSS sums; largest single process in brackets)")
    add("")
    add("| step | " + " | ".join(LABELS[t] for t in tools) + " |")
    add("|" + "---|" * (len(tools) + 1))
    for s in MEM_STEPS:
        cells = [s]
        for t in tools:
            a, b = med[t].get(f"{s}_peak_rss"), med[t].get(f"{s}_max_single_rss")
            cells.append("—" if a is None else f"{a / MiB:,.0f} ({(b or 0) / MiB:,.0f}) MiB")
        add("| " + " | ".join(cells) + " |")
    add("")

    # ------------------------------------------------------------ every round
    add("## Every round (seconds)")
    add("")
    n = meta["rounds"]
    add("| tool | step | " + " | ".join(f"r{i + 1}" for i in range(n)) + " |")
    add("|" + "---|" * (n + 2))
    for t in tools:
        for s in TIME_STEPS:
            cells = []
            for r in doc["results"][t]:
                st = r["steps"].get(s)
                cells.append("—" if st is None else f"{st['seconds']:.2f}" if st["rc"] == 0 else f"rc {st['rc']}")
            cells += [""] * (n - len(cells))
            add(f"| {LABELS[t]} | {s} | " + " | ".join(cells) + " |")
    add("")

    # ------------------------------------------------------------ notes
    add("## Notes")
    add("")
    for t in tools:
        for i, r in enumerate(doc["results"][t], 1):
            chk = r.get("restore_check")
            if chk is not None:
                verdict = (
                    "byte-identical (paths, sizes, modes, ns mtimes, content)"
                    if chk["ok"]
                    else (f"DIFFERENCES {chk.get('counts', chk.get('error'))}")
                )
                add(f"- {LABELS[t]} round {i} restore check: {verdict}")
            for s, st in r["steps"].items():
                if st["rc"] != 0:
                    tail = " / ".join(st.get("log_tail", "").strip().splitlines()[-3:])
                    add(f"- {LABELS[t]} round {i} step {s} FAILED rc {st['rc']}: {tail}")
    busy = []
    for t in tools:
        for i, r in enumerate(doc["results"][t], 1):
            for s, st in r["steps"].items():
                if loaded(st):
                    f = st["foreign_cpu_seconds"]
                    busy.append(f"{LABELS[t]} r{i} {s} ({f:.2f} s other CPU over {st['seconds']:.2f} s)")
    if busy:
        add(
            "- Other load on the machine during timed steps (busy CPU beyond the tool's own, above 15 % of one "
            "core): " + "; ".join(busy) + ". Medians leave those rounds out when at least two clean rounds remain "
            "(the cell then says how many rounds it uses; ⚠ marks a median that still includes loaded rounds)."
        )
    else:
        add("- No timed step saw other load above 15 % of one core (machine-wide busy CPU beyond the tool's own).")
    q = meta.get("quiet_gate")
    if q:
        add(
            f"- Before every timed step the harness waited for the machine's busy CPU to drop below "
            f"{q['threshold_cores']} cores: {q['waited_seconds']:.0f} s waited in total, gave up {q['gave_up']} times."
        )
    add(
        "- Method: one source folder path for every tool (reset with `cp -a` from the pristine copy before each "
        "tool, mtimes kept, 1.2 s pause so no file is within strongroom's 1 s racy-clean window); a fresh "
        "repository per tool and round; `sync` (untimed) before every timed step; page caches never dropped. "
        "restic uses its parent snapshot and borg its files cache for the re-commits (same absolute path)."
    )
    add(
        "- Peak memory: a 20 ms sampler walks /proc from the command's PID down to all descendants and sums "
        "their RSS; the peak of that sum is shown. RSS counts pages shared by forked workers once per process, "
        "so it over-states a little (conservative). The bracketed figure is the largest single process "
        "(its kernel high-water mark, VmHWM)."
    )
    add(
        "- restic 0.14 is Debian 12's package (2022) and well behind upstream; borg 1.2 uses `repokey-blake2`. "
        "Peer figures are only comparable when measured on the same machine in the same run, as here."
    )
    add("")
    return "\n".join(lines)


def write_table(stem: str, title: str, context: str, rows: list[tuple[str, str, str]]) -> str:
    """Print a results table (measure | result | target) and store it as bench/results/<stem>-latest.md."""
    text = "\n".join(
        [
            title,
            "",
            context,
            "",
            "| measure | result | target |",
            "|---|---|---|",
            *[f"| {a} | {b} | {c} |" for a, b, c in rows],
            "",
        ]
    )
    print(text)
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, f"{stem}-latest.md"), "w") as f:
        f.write(text)
    return text
