"""The benchmark results as the README's table (markdown) and one PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to a file
import matplotlib.pyplot as plt


def _n(value: float) -> str:
    return f"{value:,.0f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Mode: {results['mode']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Kafka: {m['kafka']}, MQTT: {m['mqtt']}; commit {m['commit']}; "
        f"{results['seconds']} s in all.",
        "",
        "**End-to-end latency** (MQTT publish → alert read from the alerts topic; 1 bridge, "
        "1 alerts process; 1% of readings fire an alert)",
        "",
        "| offered/s | achieved/s | allowed lateness | alerts | p50 ms | p99 ms | p99.9 ms "
        "| lost | p50 by hop: MQTT→Kafka / Kafka→alert / alert→reader (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["latency"]:
        hops = run.get("hop_p50_ms", {})
        hop_text = " / ".join(
            f"{hops.get(h, 0):,.0f}"
            for h in ("mqtt_to_kafka", "kafka_to_alert", "alert_to_consumer")
        )
        lines.append(
            f"| {_n(run['rate'])} | {_n(run['achieved_rate'])} | {run['allowed_lateness_s']:.0f} s "
            f"| {run['alerts']} | {_n(run.get('p50_ms', 0))} | {_n(run.get('p99_ms', 0))} "
            f"| {_n(run.get('p999_ms', 0))} | {run['lost_instant_alerts']} | {hop_text} |"
        )
    bridge, alerts, lake = results["bridge"], results["alerts"], results["lake"]
    one, two = alerts["alerts flow, 1 process"], alerts["alerts flow, 2 processes"]
    lines += [
        "",
        "**Throughput, side by side with baselines** (maximum sustainable rate: draining a "
        "backlog, zero loss)",
        "",
        "| contender | rate | baseline | baseline rate | ratio |",
        "|---|---|---|---|---|",
        f"| bridge, 1 process | {_n(bridge['bridge (bytewax)']['per_second'])}/s "
        f"| bare paho → confluent-kafka forwarder | {_n(bridge['bare forwarder']['per_second'])}/s "
        f"| {bridge['ratio']['bridge_over_bare']:.2f}x |",
        f"| alerts flow, 1 process | {_n(one['readings_per_s'])}/s | plain consume→decode→rules "
        f"loop | {_n(alerts['plain loop']['readings_per_s'])}/s | {one['ratio_to_plain']:.2f}x |",
        f"| alerts flow, 2 processes | {_n(two['readings_per_s'])}/s in all | same | "
        f"{_n(alerts['plain loop']['readings_per_s'])}/s | {two['ratio_to_plain']:.2f}x |",
        f"| backfill (Parquet → rules → file) | {_n(lake['backfill_rows_per_s'])} rows/s | pure "
        f"Polars window count (no alert built) | {lake['rows'] / lake['polars_s']:,.0f} rows/s "
        f"| {lake['ratio_polars_time_over_backfill_time']:.2f}x |",
        f"| archive (Kafka → Parquet lake) | {_n(lake['archive_rows_per_s'])} rows/s | — | — | — |",
        *(
            [
                f"| store (Kafka → DynamoDB API: dynalite) | "
                f"{_n(results['store']['readings_per_s'])} readings/s, "
                f"{_n(results['store']['items_per_s'])} items/s | — | — | — |"
            ]
            if "store" in results
            else []
        ),
        *_catalogue_rows(results.get("catalogue")),
        *_scorecards_rows(results.get("scorecards")),
        *_roads_rows(results.get("roads")),
        "",
        "**Scale**",
        "",
        "| trucks | state per busy truck | its snapshot | alerts process peak RSS |",
        "|---|---|---|---|",
    ]
    scale = results["scale"]
    for trucks, state in scale["state"].items():
        rss = scale["rss"].get(trucks, {}).get("peak_rss_mb", 0)
        lines.append(
            f"| {_n(int(trucks))} | {_n(state['bytes_per_truck'])} B "
            f"| {_n(state['snapshot_bytes_per_truck'])} B | {_n(rss)} MiB |"
        )
    lines += [
        "",
        "| recovery snapshots (10k trucks, 200k readings) | wall time | vs none | partitions |",
        "|---|---|---|---|",
    ]
    for label, row in scale["snapshots"].items():
        lines.append(
            f"| {label} | {row['seconds']:.2f} s | {row['ratio_to_none']:.2f}x "
            f"| {row['recovery_mb']:.1f} MiB |"
        )
    return "\n".join(lines) + "\n"


def _versus(
    contender: str, per_s: float, baseline: str, base_per_s: float, ratio: float, unit: str
) -> str:
    """A throughput table row: the contender, its baseline (same run) and the ratio."""
    return (
        f"| {contender} | {_n(per_s)}{unit} | {baseline} | {_n(base_per_s)}{unit} | {ratio:.2f}x |"
    )


def _catalogue_rows(catalogue: dict[str, Any] | None) -> list[str]:
    """The throughput table's rows of benchmarks.catalogue (when the run had it)."""
    if catalogue is None:
        return []
    stream, backfill = catalogue["stream"], catalogue["backfill"]
    ratios = catalogue["ratios"]
    builtin, ten = "alerts flow, built-in", "alerts flow, 10-rule catalogue"
    posted = "alerts flow, posted-limit catalogue"
    b_builtin, b_ten = "backfill, built-in", "backfill, 10-rule catalogue"
    b_posted = "backfill, posted-limit catalogue"
    tiers = " (10 rules + 3 tiers, roads)"
    return [
        _versus(
            ten,
            stream[ten]["per_s"],
            f"{builtin} (same run)",
            stream[builtin]["per_s"],
            ratios["stream_catalogue_over_builtin"],
            "/s",
        ),
        _versus(
            posted + tiers,
            stream[posted]["per_s"],
            f"{ten} (no roads)",
            stream[ten]["per_s"],
            ratios["stream_posted_over_catalogue"],
            "/s",
        ),
        _versus(
            b_ten,
            backfill[b_ten]["per_s"],
            b_builtin,
            backfill[b_builtin]["per_s"],
            ratios["backfill_catalogue_over_builtin"],
            " rows/s",
        ),
        _versus(
            b_posted + tiers,
            backfill[b_posted]["per_s"],
            f"{b_ten} (no roads)",
            backfill[b_ten]["per_s"],
            ratios["backfill_posted_over_catalogue"],
            " rows/s",
        ),
    ]


def _scorecards_rows(scorecards: dict[str, Any] | None) -> list[str]:
    """The throughput table's row of benchmarks.scorecards (when the run had it)."""
    if scorecards is None:
        return []
    stream = scorecards["stream"]
    builtin = "alerts flow, built-in"
    return [
        _versus(
            f"{builtin} + driver scorecards",
            stream[f"{builtin} + scorecards"]["per_s"],
            f"{builtin} (same run)",
            stream[builtin]["per_s"],
            scorecards["ratios"]["with_over_without"],
            "/s",
        )
    ]


def _roads_rows(roads: dict[str, Any] | None) -> list[str]:
    """The throughput table's row of benchmarks.roads (when the run had it)."""
    if roads is None:
        return []
    rows = roads["matching"]["contenders"]
    naive = next(name for name in rows if name.startswith("naive"))
    batch = rows["match, batches of 1,000"]
    return [
        _versus(
            "map matching, batches of 1,000 (road index)",
            batch["per_s"],
            "one query_nearest per reading",
            rows[naive]["per_s"],
            batch["ratio_to_naive"],
            " readings/s",
        )
    ]


def catalogue_markdown(results: dict[str, Any]) -> str:
    """benchmarks.catalogue's results (catalogue.json) as docs/performance.md's table."""
    m = results["machine"]
    stream, backfill, ratios = results["stream"], results["backfill"], results["ratios"]
    before, after = results["load_before"], results["load_after"]
    plain = stream["plain loop"]
    builtin, ten = stream["alerts flow, built-in"], stream["alerts flow, 10-rule catalogue"]
    posted = stream["alerts flow, posted-limit catalogue"]
    b_builtin, b_ten = backfill["backfill, built-in"], backfill["backfill, 10-rule catalogue"]
    b_posted = backfill["backfill, posted-limit catalogue"]
    where, roads = results["positions"], results["roads"]

    def runs(row: dict[str, Any]) -> str:
        return " / ".join(f"{s:.2f}" for s in row["runs_s"])

    lines = [
        f"Mode: {results['mode']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Kafka: {m['kafka']}; commit {m['commit']}; "
        f"{results['seconds']} s in all. Other load: {before['pytest_processes']} pytest "
        f"processes and load average {before['loadavg_1m']:.2f} before, "
        f"{after['pytest_processes']} and {after['loadavg_1m']:.2f} after.",
        "",
        f"**Rule catalogue** ({_n(results['trucks'])} trucks; stream: "
        f"{_n(results['readings'])} readings on a 16-partition topic, 1 process; backfill: "
        f"{_n(results['rows'])} rows; version 2 of the catalogue from "
        f"{results['second_version_from']}; best of {results['rounds']} alternating runs, "
        "start-up included)",
        "",
        f"Positions of the stream's readings: {_pct(where['on_a_road'])} within 20 m of a road "
        f"of {roads['extract']} ({_n(roads['ways'])} ways), {_pct(where['on_a_road_with_a_limit'])}"
        f" on one with a limit; {_pct(where['in Helsinki centre'])} in the zone Helsinki centre, "
        f"{_pct(where['in West Harbour'])} in West Harbour. The 10-rule catalogue runs with "
        "`FLEET_ROADS=none`; the posted-limit catalogue (the same 10 rules and the sample's "
        "three posted-limit tiers) with the roads, from a warm `FLEET_ROADS_CACHE`.",
        "",
        "| contender | rate | baseline | baseline rate | ratio | alerts | runs (s) |",
        "|---|---|---|---|---|---|---|",
        f"| alerts flow, built-in | {_n(builtin['per_s'])}/s | plain consume→decode→rules loop "
        f"| {_n(plain['per_s'])}/s | {ratios['stream_builtin_over_plain']:.2f}x "
        f"| {_n(builtin['alerts'])} | {runs(builtin)} vs {runs(plain)} |",
        f"| alerts flow, 10-rule catalogue | {_n(ten['per_s'])}/s | alerts flow, built-in "
        f"| {_n(builtin['per_s'])}/s | {ratios['stream_catalogue_over_builtin']:.2f}x "
        f"| {_n(ten['alerts'])} | {runs(ten)} vs {runs(builtin)} |",
        f"| alerts flow, posted-limit catalogue | {_n(posted['per_s'])}/s | alerts flow, "
        f"10-rule catalogue | {_n(ten['per_s'])}/s | "
        f"**{ratios['stream_posted_over_catalogue']:.2f}x** | {_n(posted['alerts'])} "
        f"| {runs(posted)} vs {runs(ten)} |",
        f"| backfill, 10-rule catalogue | {_n(b_ten['per_s'])} rows/s | backfill, built-in "
        f"| {_n(b_builtin['per_s'])} rows/s | {ratios['backfill_catalogue_over_builtin']:.2f}x "
        f"| {_n(b_ten['alerts'])} vs {_n(b_builtin['alerts'])} | {runs(b_ten)} vs "
        f"{runs(b_builtin)} |",
        f"| backfill, posted-limit catalogue | {_n(b_posted['per_s'])} rows/s | backfill, "
        f"10-rule catalogue | {_n(b_ten['per_s'])} rows/s "
        f"| **{ratios['backfill_posted_over_catalogue']:.2f}x** | {_n(b_posted['alerts'])} "
        f"| {runs(b_posted)} vs {runs(b_ten)} |",
        "",
        "| posted-limit catalogue: alerts by rule (its 10 rules' are the 10-rule catalogue's) "
        "| stream | backfill |",
        "|---|---|---|",
    ]
    rules = sorted(set(posted["alerts_by_rule"]) | set(b_posted["alerts_by_rule"]))
    for rule in rules:
        lines.append(
            f"| {rule} | {_n(posted['alerts_by_rule'].get(rule, 0))} "
            f"| {_n(b_posted['alerts_by_rule'].get(rule, 0))} |"
        )
    return "\n".join(lines) + "\n"


def scorecards_markdown(results: dict[str, Any]) -> str:
    """benchmarks.scorecards's results (scorecards.json) as docs/performance.md's table."""
    m = results["machine"]
    before, after = results["load_before"], results["load_after"]
    rows, cards, ratios = results["stream"], results["scorecards"], results["ratios"]
    without = rows["alerts flow, built-in"]
    with_ = rows["alerts flow, built-in + scorecards"]

    def runs(row: dict[str, Any], key: str) -> str:
        return " / ".join(f"{s:.2f}" for s in row[key])

    days = ", ".join(f"{_n(n)} for {day}" for day, n in cards["by_day"].items())
    lines = [
        f"Mode: {results['mode']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Kafka: {m['kafka']}; commit {m['commit']}; "
        f"{results['seconds']} s in all. Other load: {before['pytest_processes']} pytest "
        f"processes and load average {before['loadavg_1m']:.2f} before, "
        f"{after['pytest_processes']} and {after['loadavg_1m']:.2f} after.",
        "",
        f"**Driver scorecards** ({_n(results['trucks'])} trucks, {_n(results['readings'])} "
        f"readings with positions on a 16-partition topic, {results['first_ts']} to "
        f"{results['last_ts']}, `FLEET_TIMEZONE={results['timezone']}`; the head: the first "
        f"{_n(results['head'])} on a topic of their own; 1 process, built-in rules; best of "
        f"{results['rounds']} alternating runs of each, start-up included)",
        "",
        "| contender | whole run | head | marginal rate | baseline | whole run | head "
        "| marginal rate | ratio, whole run | ratio, marginal |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| alerts flow, built-in + scorecards | {_n(with_['per_s'])}/s "
        f"({with_['seconds']:.2f} s) | {with_['head_seconds']:.2f} s "
        f"| {_n(with_['marginal_per_s'])}/s | alerts flow, built-in | {_n(without['per_s'])}/s "
        f"({without['seconds']:.2f} s) | {without['head_seconds']:.2f} s "
        f"| {_n(without['marginal_per_s'])}/s | **{ratios['with_over_without']:.2f}x** "
        f"| **{ratios['marginal_with_over_without']:.2f}x** |",
        "",
        f"Runs (s), all the readings: {runs(with_, 'runs_s')} with scorecards, "
        f"{runs(without, 'runs_s')} without; the head: {runs(with_, 'head_runs_s')} with, "
        f"{runs(without, 'head_runs_s')} without. Alerts in every run: "
        f"{_n(with_['alerts'])}. Scorecards in every round: {_n(cards['count'])} ({days}), "
        f"{_n(cards['drivers'])} drivers (no driver counted as one), {_n(cards['readings'])} "
        f"readings and {_n(cards['distance_km'])} km in all; sha256 of the sorted records "
        f"`{cards['sha256'][:16]}`.",
    ]
    return "\n".join(lines) + "\n"


def _pct(share: float) -> str:
    return f"{share * 100:.1f} %"


def roads_markdown(results: dict[str, Any]) -> str:
    """benchmarks.roads's results (roads.json) as docs/performance.md's table."""
    m = results["machine"]
    before, after = results["load_before"], results["load_after"]
    up, mem, matching = results["start_up"], results["memory"], results["matching"]
    kinds, index = results["kinds"], results["index"]
    rows = matching["contenders"]
    naive = next(name for name in rows if name.startswith("naive"))

    def runs(row: dict[str, Any]) -> str:
        return " / ".join(f"{s:.3f}" for s in row["runs_s"])

    lines = [
        f"Mode: {results['mode']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}; commit {m['commit']}; {results['seconds']} s in all. Other "
        f"load: {before['pytest_processes']} pytest processes and load average "
        f"{before['loadavg_1m']:.2f} before, {after['pytest_processes']} and "
        f"{after['loadavg_1m']:.2f} after.",
        "",
        f"**Map matching** ({results['extract']}: {_n(index['ways'])} ways, "
        f"{_n(index['segments'])} segments; {_n(results['readings'])} readings: "
        f"{_n(kinds['on_roads'])} on roads with 3 m GPS noise per axis, "
        f"{_n(kinds['far_from_roads'])} far from any road, {_n(kinds['without_position'])} "
        f"without a position; within {matching['max_m']:.0f} m, {_n(matching['matched'])} "
        f"matched; best of {results['rounds']} alternating runs, every contender with the "
        "naive loop's answers)",
        "",
        "| contender | readings/s | ratio to the naive loop | runs (s) |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {_n(row['per_s'])} | {row['ratio_to_naive']:.2f}x | {runs(row)} |"
        )
    lines += [
        "",
        f"**Start-up** (best of {up['repeats']}, alternating; median in brackets)",
        "",
        "| contender | time | baseline | time | ratio |",
        "|---|---|---|---|---|",
        f"| cached start-up (hash the extract, read the .npz, rebuild the tree) "
        f"| {up['cached_s'] * 1000:.1f} ms ({up['cached_median_s'] * 1000:.1f}), of which "
        f"hashing {up['hashing_s'] * 1000:.1f} ms | build without a cache (read with pyosmium, "
        f"project, build the tree) | {up['build_s'] * 1000:.0f} ms "
        f"({up['build_median_s'] * 1000:.0f}), of which reading {up['reading_s'] * 1000:.0f} ms "
        f"| {up['ratio_build_over_cached']:.1f}x faster |",
        "",
        "**Memory** (RSS of a fresh process that imported connectors.roads, numpy, shapely, "
        "pyproj and osmium, after `gc.collect()`)",
        "",
        "| what | size | baseline | size | ratio |",
        "|---|---|---|---|---|",
        f"| each further index | {mem['further_index_mib']:.2f} MiB RSS "
        f"(tracemalloc: {mem['traced_mib']:.2f} MiB; arrays {mem['array_mib']:.2f} MiB) "
        f"| the process before any index | {mem['process_before_mib']:.0f} MiB "
        f"| {mem['ratio_further_index_over_process']:.3f} |",
        f"| the first index (with pyproj's one-off set-up) | {mem['first_index_mib']:.2f} MiB "
        f"| same | {mem['process_before_mib']:.0f} MiB "
        f"| {mem['first_index_mib'] / mem['process_before_mib']:.3f} |",
        f"| cache file | {_n(mem['cache_kib'])} KiB | the extract | {_n(mem['extract_kib'])} KiB "
        f"| {mem['ratio_cache_over_extract']:.2f} |",
    ]
    cost = results.get("flow_cost")
    if cost is not None:
        lines += [
            "",
            f"**What matching costs the alerts flow**: at {_n(cost['flow_per_s'])} readings/s "
            f"(1 process) and matching at {_n(cost['match_per_s'])}/s in batches of "
            f"{_n(cost['batch'])}, each reading takes {cost['added_time_share']:.1%} longer; "
            f"the flow would keep {cost['kept_share']:.1%} of its rate "
            f"(~{_n(cost['flow_with_matching_per_s'])}/s). The aim: at most a third lost.",
        ]
    lines += [
        "",
        f"The baseline ({naive}): a Python loop that, for each reading, transforms the one "
        "point with pyproj and asks `STRtree.query_nearest` for one shapely `Point` within "
        "the distance, ties to the smaller way id, on its own tree of the same segments.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for lateness, marker in ((0.0, "o"), (10.0, "s")):
        runs = [r for r in results["latency"] if r["allowed_lateness_s"] == lateness]
        rates = [r["rate"] for r in runs]
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            left.plot(
                rates,
                [r.get(key, float("nan")) for r in runs],
                marker=marker,
                label=f"{label}, lateness {lateness:.0f} s",
            )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("offered readings/s")
    left.set_ylabel("publish → alert (ms)")
    left.set_title("End-to-end latency")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)

    bridge, alerts, lake = results["bridge"], results["alerts"], results["lake"]
    ratios = {
        "bridge / bare\nforwarder": bridge["ratio"]["bridge_over_bare"],
        "alerts (1 proc) /\nplain loop": alerts["alerts flow, 1 process"]["ratio_to_plain"],
        "alerts (2 procs) /\nplain loop": alerts["alerts flow, 2 processes"]["ratio_to_plain"],
        "backfill /\npure Polars": lake["ratio_polars_time_over_backfill_time"],
    }
    bars = right.bar(list(ratios), list(ratios.values()), color="#4c72b0")
    right.bar_label(bars, fmt="%.2fx")
    right.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    right.set_ylabel("throughput ratio to baseline")
    right.set_title("Throughput vs baselines (same run)")
    right.tick_params(axis="x", labelsize=8)
    m = results["machine"]
    figure.suptitle(f"fleetwatch benchmarks ({results['mode']}), {m['cores']} cores, {m['cpu']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
