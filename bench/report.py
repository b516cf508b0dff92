"""Targets, and the three outputs of a bench run: JSON, a chart, and the table in benchmarks.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.stack.compose import REPO

DOCS = REPO / "docs"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def _by_name(rows: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    return next(r for r in rows if r["name"].startswith(prefix))


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cp, http = results["connect_path"], results["http"]
    api_path = _by_name(cp, "api_path")["tps"]
    ceiling = _by_name(cp, "ceiling")["tps"]
    scram = _by_name(cp, "scram_tcp")["tps"]
    nullpool = _by_name(http, "nullpool_pgbouncer/product")["requests_per_s"]
    pooled = _by_name(http, "pooled_direct/product")["requests_per_s"]
    old = _by_name(http, "api_994e2cf/product")["requests_per_s"]
    livez = _by_name(http, "nullpool_pgbouncer/livez")["requests_per_s"]
    bare = _by_name(http, "bare_starlette/livez")["requests_per_s"]
    readyz = _by_name(http, "nullpool_pgbouncer/readyz")["requests_per_s"]
    # The API's own endpoints; the baselines' tails are in the table, not in the target.
    worst = max(
        (r for r in http if r["name"].startswith("nullpool_pgbouncer/")),
        key=lambda r: r["p99_ms"] / r["p50_ms"],
    )
    crowd, soak = results["crowd"], results["soak"]
    rows = [
        ("connect path vs no-auth ceiling (pgbench -C)", api_path / ceiling, ">= 0.9",
         api_path / ceiling >= 0.9),
        ("connect path vs SCRAM-4096 over TCP", api_path / scram, ">= 10", api_path / scram >= 10),
        ("GET /api/products/{id} vs the API at 994e2cf", nullpool / old, ">= 3",
         nullpool / old >= 3),
        ("/livez vs a bare Starlette app, same server", livez / bare, ">= 0.8",
         livez / bare >= 0.8),
        ("API NullPool->PgBouncer vs in-process pool direct", nullpool / pooled, ">= 0.9",
         nullpool / pooled >= 0.9),
        (f"worst p99/p50 at 64 connections ({worst['name']})", worst["p99_ms"] / worst["p50_ms"],
         "<= 5", worst["p99_ms"] / worst["p50_ms"] <= 5),
        ("/readyz vs /livez (readiness cache)", readyz / livez, ">= 0.9", readyz / livez >= 0.9),
        (f"PostgreSQL backends at {crowd['connections']} clients", crowd["peak_server_connections"],
         f"<= {crowd['pool_limit']}", crowd["peak_server_connections"] <= crowd["pool_limit"]),
        (f"errors at {crowd['connections']} clients", crowd["errors"], "== 0",
         crowd["errors"] == 0),
        (f"errors in a {soak['seconds']} s soak", soak["errors"], "== 0", soak["errors"] == 0),
    ]  # fmt: skip
    return [{"name": n, "value": float(v), "target": t, "met": bool(m)} for n, v, t, m in rows]


def _chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if "backup" in results else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    left, right = axes[0], axes[1]
    cp = results["connect_path"]
    bars = left.barh(
        [r["name"] for r in cp], [r["tps"] for r in cp], color=["#2b7bb9", "#9ecae1", "#d95f0e"]
    )
    left.bar_label(bars, fmt="{:,.0f}", padding=3)
    left.set_xlabel("new connections per second (pgbench -C, SELECT 1)")
    left.set_title("Connect path through PgBouncer")
    http = results["http"]
    bars = right.barh(
        [r["name"] for r in http], [r["requests_per_s"] for r in http], color="#31a354"
    )
    right.bar_label(bars, fmt="{:,.0f}", padding=3)
    right.set_xlabel("requests per second (wrk, 64 connections)")
    right.set_title("API throughput")
    if "backup" in results:
        b = results["backup"]
        names = ["pg_basebackup (zstd)", "pgBackRest full", "pgBackRest incr (1%)",
                 "copy data dir", "PITR: API away", "dump restore: API away"]  # fmt: skip
        keys = ["basebackup_s", "pgbackrest_full_s", "pgbackrest_incr_s", "copy_datadir_s",
                "pitr_unavailable_s", "dump_restore_unavailable_s"]  # fmt: skip
        values = [b[k] for k in keys]
        bars = axes[2].barh(names, values, color="#756bb1")
        axes[2].bar_label(bars, fmt="{:,.1f} s", padding=3)
        axes[2].set_xlabel(
            f"seconds, {b['database_bytes'] / 1e9:.1f} GB database (lower is better)"
        )
        axes[2].set_title("Backups and recovery")
    for axis in axes:
        axis.margins(x=0.2)  # room for the labels
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"pgstack benchmarks, {results['generated_at']} ({results['machine']['cpus']} cores)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = ""
    if "load_average_at_start" in machine:
        load = (f", load average {machine['load_average_at_start']:.1f} at the start"
                f" and {machine.get('load_average_at_end', 0):.1f} at the end")  # fmt: skip
    lines = [f"Run of {results['generated_at']} on {results['machine']['cpus']} cores{load}"
             f"{' (QUICK run)' if results['machine']['quick'] else ''}.", "",
             "| target | measured | wanted | met |", "|---|---|---|---|"]  # fmt: skip
    for t in results["targets"]:
        lines.append(
            f"| {t['name']} | {t['value']:.2f} | {t['target']} | {'yes' if t['met'] else 'NO'} |"
        )
    lines += ["", "| connect path | tps | failed |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['tps']:,.0f} | {r['failed']} |" for r in results["connect_path"]]
    lines += [
        "",
        "| HTTP | conns | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in [*results["http"], results["crowd"], results["soak"]]:
        lines.append(
            f"| {r['name']} | {r['connections']} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['errors']} |"
        )
    if "backup" in results:
        lines += ["", "| backups and recovery | value |", "|---|---|"]
        lines += [f"| {k} | {_figure(v)} |" for k, v in results["backup"].items()]
    if "ha" in results:
        lines += _ha_table(results["ha"])
    return "\n".join(lines)


def _ha_table(ha: dict[str, Any]) -> list[str]:
    """make bench-ha: per fault, what the writer saw; throughput of the cluster and the node."""
    lines = ["", f"Cluster under faults (make bench-ha, {ha['generated_at']}):", "",
             "| fault | s without a writable leader | longest gap between acks s | acknowledged "
             "| lost | unexplained | failed requests | outside 503 contract |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in ha["faults"]:
        lines.append(
            f"| {f['fault']} | {f['unavailable_s']:.1f} | {f['longest_gap_s']:.1f} "
            f"| {f['acknowledged']} | {f['acknowledged_lost']} | {f['unexplained_orders']} "
            f"| {f['failed_requests']} | {f['answers_outside_contract']} |"
        )
    lines += ["", "| throughput (wrk, 64 connections, inside the API's container) | req/s "
              "| p99 ms | errors |", "|---|---|---|---|"]  # fmt: skip
    for key in ("throughput_cluster", "throughput_single"):
        for r in ha.get(key, {}).values():
            lines.append(f"| {r['name']} | {r['requests_per_s']:,.0f} | {r['p99_ms']:.2f} "
                         f"| {r['errors']} |")  # fmt: skip
    return lines


def _figure(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_figure(v) for v in value)
    return f"{value:,}" if isinstance(value, int | float) else str(value)


def all_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the results hold figures for: the API's, the backups' (make bench-backup) and
    the cluster's (make bench-ha); a phase left out of a run keeps its last recorded figures."""
    from bench import backup, failover  # they record through this module

    found = targets(results)
    if "backup" in results:
        found += backup.targets(results["backup"])
    if "ha" in results:
        found += failover.targets(results["ha"])
    return found


def record(section: str, figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One phase's figures (make bench-backup, make bench-ha) written into the last run's files
    beside the others; the targets recomputed from all of them. Returns the targets."""
    results = json.loads((DOCS / "benchmarks.json").read_text())
    results[section] = figures
    results["targets"] = all_targets(results)
    write(results)
    return list(results["targets"])


def write(results: dict[str, Any]) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    _chart(results, DOCS / "benchmarks.png")
    md = DOCS / "benchmarks.md"
    text = md.read_text() if md.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    md.write_text(f"{head}{BEGIN}\n{_table(results)}\n{END}{tail}")
