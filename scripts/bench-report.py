#!/usr/bin/env python3
"""Combines the benchmark results into one JSON document and a Markdown
table: each figure with the baseline measured in the same run and their
ratio. Usage: bench-report.py <dir with the cascade bench JSON> <criterion dir>"""

import json
import os
import sys


def criterion(root, group, name):
    """Mean time of a criterion benchmark, in seconds."""
    path = os.path.join(root, group, name, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"] / 1e9


def main():
    results, crit = sys.argv[1], sys.argv[2]
    load = lambda name: json.load(open(os.path.join(results, name + ".json")))
    replication, agents, content = load("replication"), load("agents"), load("content")
    unauthenticated = load("unauthenticated")
    rollup = load("rollup")
    reports = load("reports")

    rows = []

    def row(area, figure, value, unit, baseline_name, baseline, better):
        # ratio > 1 means the figure is better than its baseline.
        if baseline in (None, 0) or value in (None, 0):
            ratio = None
        elif better == "lower":
            ratio = baseline / value
        else:
            ratio = value / baseline
        rows.append({
            "area": area, "figure": figure, "value": value, "unit": unit,
            "baseline": baseline_name, "baseline_value": baseline, "ratio": ratio,
        })

    dedup = criterion(crit, "planner", "plan_10000_computers_500_distinct")
    no_dedup = criterion(crit, "planner", "plan_1000_computers_without_dedup") * 10
    row("applicability", "10,000 computers, 500 distinct inventories, 100,000 updates", dedup, "s",
        "every computer evaluated (1,000 measured x 10)", no_dedup, "lower")

    batch = criterion(crit, "store", "ingest_1000_records_from_20_computers")
    single = criterion(crit, "store", "ingest_1000_records_one_per_commit")
    row("ingest", "1,000 records in one durable batch", 1000 / batch, "records/s",
        "one durable commit per record", 1000 / single, "higher")

    lat = replication["latency_ms"]
    polling = replication["polling_baseline_ms"]
    row("replication latency", "root to leaf over 3 hops, push, p50", lat["p50"], "ms",
        f"polling every {polling['interval_ms']} ms, p50", polling["p50"], "lower")
    row("replication latency", "root to leaf over 3 hops, push, p99", lat["p99"], "ms",
        f"polling every {polling['interval_ms']} ms, p99", polling["p99"], "lower")
    sync = replication["initial_sync"]
    row("delta sync", "one changed approval", replication["one_change_bytes"]["bytes"], "bytes",
        f"initial sync of {sync['updates']} updates", sync["bytes"], "lower")
    up = replication["upward"]
    local = up["single_store_baseline"]["records_per_second"]
    row("upward throughput", "repeat reports over 3 hops", up["repeat_reports"]["records_per_second"], "records/s",
        "the first reports ingested into one store, no hops", local, "higher")
    row("upward throughput", "first reports of new computers over 3 hops", up["first_reports"]["records_per_second"],
        "records/s", "the same into one store, no hops", local, "higher")
    row("initial sync", f"{sync['updates']} updates to a new child", sync["seconds"], "s",
        "the goal", sync["goal_seconds"], "lower")
    rc = rollup["computers"]
    ingest = rollup["ingest"]
    row("rollup", f"{rc} computers x {rollup['updates']} updates through a site into the root",
        ingest["records_per_second"], "records/s", ingest["baseline"], ingest["baseline_records_per_second"], "higher")
    disk = rollup["root_disk"]
    row("rollup", "bytes on disk per record at the root", disk["bytes_per_record"], "bytes",
        disk["baseline"], disk["baseline_bytes_per_record"], "lower")
    row("rollup", "live bytes per record at the root (keys and values; the rest is the storage engine's log)",
        disk["live_bytes_per_record"], "bytes", "bytes on disk per record", disk["bytes_per_record"], "lower")
    packed = load("rollup-compressed")
    row("rollup", f"bytes on disk per record at the root, store compressed ({packed['computers']} computers)",
        packed["root_disk"]["bytes_per_record"], "bytes", "uncompressed (above)", disk["bytes_per_record"], "lower")
    row("rollup", f"ingest with every store compressed ({packed['computers']} computers)",
        packed["ingest"]["records_per_second"], "records/s", "uncompressed (above)", ingest["records_per_second"], "higher")
    memory = rollup["memory"]
    row("rollup", "peak RSS of the root's process at the end of the ingest", memory["root_peak_rss_bytes"] / 2**20,
        "MB", "the goal", memory["goal_bytes"] / 2**20, "lower")
    row("rollup", "peak RSS of the root's process over the whole run", memory["root_peak_rss_whole_run_bytes"] / 2**20,
        "MB", "the root idle, before the ingest", memory["root_idle_rss_bytes"] / 2**20, "lower")
    q = rollup["root_queries"]
    for name, label in [("compliance_by_update", "compliance by update"),
                        ("by_site_and_severity", "by site and severity"),
                        ("computers_needing_update_at_site", "the computers that need update X at site Y")]:
        row("rollup", f"root query p99: {label}", q[name]["p99_ms"], "ms",
            "one computer's records read, p99", q["baseline_one_computer_read"]["p99_ms"], "lower")
    rec = rollup["recovery"]
    row("rollup", "root exact again after the site's outbox was lost", rec["lost_outbox"]["seconds"], "s",
        "the first ingest", ingest["seconds"], "lower")
    row("rollup", "the site moved: its state through the new region", rec["moved_site"]["seconds"], "s",
        "the first ingest", ingest["seconds"], "lower")
    rq = reports["queries"]
    rn = f"{reports['computers']} computers x {reports['updates']} updates"
    row("reports", f"dashboard query p99, the slowest ({rn})", reports["dashboard_worst_p99_ms"], "ms",
        "the goal", reports["dashboard_goal_ms"], "lower")
    for name in ["compliance_by_site", "compliance_by_severity", "trend_30_days", "trend_365_days",
                 "top_failing_updates", "first_computer", "link_health", "failed_computers_of_an_update",
                 "required_at_one_site", "one_computer"]:
        row("reports", f"query p99: {name.replace('_', ' ')}", rq[name]["p99_ms"], "ms",
            "the goal", reports["dashboard_goal_ms"], "lower")
    export = reports["export"]
    row("reports", f"CSV export of {export['rows']} rows", export["rows_per_second"], "rows/s",
        "the goal", export["goal_rows_per_second"], "higher")
    row("reports", f"CSV export of {export['rows']} rows, p50", export["latency"]["p50_ms"], "ms",
        "the same rows read from the store", export["baseline_store_read_p50_ms"], "lower")
    row("agent check-ins", f"{agents['agents']} agents checked in, installed, reported", agents["seconds"], "s",
        "as many agents, each with an inventory of its own", agents["baseline_unique_inventories"]["seconds"], "lower")
    row("node memory", "peak RSS serving the agents", agents["node_peak_rss_mb"], "MB",
        "the same node idle with its catalog", agents.get("node_idle_rss_mb"), "lower")
    row("content transfer", f"{content['bytes'] >> 20} MB over 2 hops", content["transfer_mb_per_second"], "MB/s",
        "plain file copy", content["file_copy_mb_per_second"], "higher")
    row("unauthenticated load",
        f"peak RSS under {unauthenticated['requests']} requests of {unauthenticated['bytes_each'] >> 20} MB without credentials",
        unauthenticated["peak_rss_bytes"] / 2**20, "MB",
        "the same node idle", unauthenticated["idle_rss_bytes"] / 2**20, "lower")

    # Figures measured without a baseline of their own stay in "raw".
    raw = {
        "replication": replication,
        "agents": agents,
        "content": content,
        "unauthenticated": unauthenticated,
        "rollup": rollup,
        "reports": reports,
        "planner_one_inventory_ms": criterion(crit, "planner", "plan_one_inventory") * 1000,
    }
    document = {"results": rows, "raw": raw}
    print(json.dumps(document, indent=2))
    print()
    print("| area | figure | value | baseline | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.4g} {r['unit']}"
        baseline = "" if r["baseline"] is None else f"{r['baseline']}: {r['baseline_value']:.4g}" if r["baseline_value"] is not None else r["baseline"]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"| {r['area']} | {r['figure']} | {value} | {baseline} | {ratio} |")


if __name__ == "__main__":
    main()
