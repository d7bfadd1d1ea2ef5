"""``make demo``: the pipeline on embedded brokers, live, ending by itself with a summary.

Starts an MQTT broker and a Kafka-protocol broker on free ports, the flows as real processes
(``python -m bytewax.run dataflows.<name>``), and a simulated fleet publishing over MQTT: trucks
delivering in central Helsinki on the roads of the default extract (``devtools.road_fleet``);
prints what flows through every few seconds, then stops everything it started (also on
Ctrl-C) and prints a summary that accounts for every published message and checks the
streamed alerts against the same readings evaluated in sorted order, the archived alerts
(``dataflows.archive_alerts``, run to the end of ``fleet.alerts``) and a backfill over the lake
against the streamed ones. Driver scorecards (Europe/Helsinki days): the live alerts flow
writes them to ``fleet.scorecards``, but a day closes only after local midnight plus
FLEET_SCORECARD_GRACE_S in event time, which a run of minutes never reaches, and stopping
the flow (SIGTERM) ends it without closing any day. So after the live run a bounded alerts
pass (``FLEET_KAFKA_TAIL=false``) reads ``fleet.telemetry`` to its end, which closes every
day, and writes the scorecards to ``fleet.scorecards`` (its alerts go to a scratch topic,
so ``fleet.alerts`` stays the live run's); they are archived with the alerts and checked,
field for field, against the backfill's and the lake's. It ends by drawing the run's map
(``fleetwatch.map``): the roads, the trucks' tracks, the alerts by rule.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.alert_lake import alerts_root, scan_alerts
from connectors.catalogue import load_catalogue
from connectors.history import load_history_dir
from connectors.road_limits import PostedLimits
from connectors.roads import DEFAULT_MATCH_M, default_cache_dir, default_extract
from connectors.scorecard_lake import scan_scorecards, scorecard_files, scorecards_of
from devtools.email_receiver import EmailReceiver
from devtools.history_generator import HistoryShape
from devtools.history_generator import write as write_history
from devtools.kafka_monitor import TopicTally, read_to_end
from devtools.launcher import FlowProcess
from devtools.localbrokers import LocalBrokers, local_brokers
from devtools.mqtt_publisher import publish_paced
from devtools.road_fleet import RoadFleetOptions, RoadFleetSimulator
from devtools.simulator import FleetConfig, SimulatedMessage
from domain.alerts import alert_id
from domain.catalogue import RuleBook
from domain.rules import RuleState, judge
from domain.scorecards import encode_scorecard
from domain.timestamps import to_epoch_ms
from runtime.settings import MqttUrl

ROOT = Path(__file__).resolve().parents[1]
TELEMETRY, DLQ, ALERTS = "fleet.telemetry", "fleet.dlq", "fleet.alerts"
SCORECARDS = "fleet.scorecards"
TIMEZONE = "Europe/Helsinki"  # the scorecards' local days
# The bounded alerts pass's alerts and late readings: not the live run's topics.
REPLAY_ALERTS, REPLAY_LATE = "demo.replay.alerts", "demo.replay.late"
FLOWS = ("bridge", "alerts", "archive", "notify")
# The sample rule catalogue: the built-in rules, then (from 2026-12-01) one rule of each kind.
RULES, ZONES = ROOT / "catalogue" / "rules", ROOT / "catalogue" / "zones.geojson"
DEMO_SECRET = "fleetwatch-demo-signing-secret-0123"
# The fleet's depots (lat, lon) on roads of the Helsinki extract: the South Harbour quay
# (Eteläranta, inside the sample yard of catalogue/zones.geojson), Hakaniemenranta, Annankatu.
DEPOTS = ((60.16567, 24.95239), (60.17822, 24.95096), (60.16628, 24.93775))
READING_INTERVAL_S = 1.0  # event time between two readings of a truck


def demo_fleet(
    trucks: int,
    rate: float,
    duration_s: float,
    end_ms: int,
    vehicle_classes: dict[str, str] | None = None,
) -> RoadFleetSimulator:
    """The demo's fleet. Each truck reports once a second of event time, so the run replays
    ``duration_s * rate / trucks`` seconds of driving (10 minutes with the defaults) at that
    many times real time; the drive ends at ``end_ms`` (now: nothing is in the future)."""
    span_ms = round(duration_s * rate / trucks * READING_INTERVAL_S * 1000)
    config = FleetConfig(
        trucks=trucks,
        seed=42,
        start_ms=end_ms - span_ms,
        interval_s=READING_INTERVAL_S,
        bad_share=0.02,
        resend_share=0.01,
        disorder_s=2.0,
        spike_chance=0.0002,
    )
    return RoadFleetSimulator(
        config, RoadFleetOptions(depots=DEPOTS, vehicle_classes=vehicle_classes)
    )


@dataclass(frozen=True)
class Expected:
    """What the published messages must become."""

    reading_ids: set[str]
    bad: int
    resends: int
    alert_ids: set[str]
    alerts_by_rule: Counter[str]

    @classmethod
    def of(cls, messages: list[SimulatedMessage], book: RuleBook, limits: PostedLimits) -> Expected:
        readings = {m.reading.event_id: m.reading for m in messages if m.reading is not None}
        states: dict[str, dict[str, RuleState]] = {}
        alert_ids, by_rule = set(), Counter[str]()
        # The same readings, with the posted limits of the roads they match (as the flows
        # attach them), judged in sorted order with the same rules: what the stream must give.
        ordered = sorted(readings.values(), key=lambda r: (r.ts_ms, r.event_id))
        limits.attach([ordered], book.vehicle_classes)
        for reading in ordered:
            for detection in judge(states.setdefault(reading.truck_id, {}), [reading], book):
                alert_ids.add(
                    alert_id(detection.rule, detection.truck_id, detection.readings[0].event_id)
                )
                by_rule[str(detection.rule)] += 1
        return cls(
            set(readings),
            sum(m.reading is None for m in messages),
            sum(m.is_resend for m in messages),
            alert_ids,
            by_rule,
        )


def _flow_env(brokers: LocalBrokers, history_dir: Path) -> dict[str, str]:
    """The flows' settings; the launcher adds the inherited environment (no FLEET_*)."""
    return {
        "FLEET_HISTORY_DIR": str(history_dir),
        "FLEET_RULES": str(RULES),
        "FLEET_ZONES": str(ZONES),
        "FLEET_MQTT_URL": brokers.mqtt_url,
        "FLEET_MQTT_PROTOCOL": brokers.mqtt_protocol,
        "FLEET_MQTT_SHARE_GROUP": "fleetwatch-bridge" if brokers.shared_subscriptions else "",
        "FLEET_KAFKA_BROKERS": brokers.kafka_brokers,
        "FLEET_TOPIC_PARTITIONS": "4",
        "FLEET_LAKE_DIR": str(history_dir.parent / "lake"),
        "FLEET_LAKE_ROLL_S": "5",
        "FLEET_TIMEZONE": TIMEZONE,
    }


@contextmanager
def _flow(name: str, env: dict[str, str], workdir: Path) -> Iterator[FlowProcess]:
    process = FlowProcess(f"dataflows.{name}", env, workdir / f"{name}.log").start()
    try:
        yield process
    finally:
        process.stop(timeout_s=20)  # SIGTERM: graceful where the flow supports it


def run(duration_s: float, rate: float, trucks: int, workdir: Path) -> int:
    # A fresh run: old logs would satisfy the start-up checks below, old broker state would
    # replay an earlier run's sessions.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"fleetwatch demo: {trucks} trucks, {rate:.0f} msgs/s for {duration_s:.0f} s")
    print(f"  logs in {workdir}/")
    # Driver history around today (the shipped sample covers a fixed week in 2026).
    history_dir = workdir / "history"
    write_history(
        HistoryShape(trucks=trucks, start=datetime.now(UTC).date() - timedelta(days=1), days=3),
        history_dir,
    )
    # Scopes by vehicle class, and each truck's posted limits (a heavy truck's maxspeed:hgv).
    classes = load_history_dir(history_dir).vehicle_classes
    fleet = demo_fleet(trucks, rate, duration_s, to_epoch_ms(datetime.now(UTC)), dict(classes))
    messages = list(fleet.messages(int(rate * duration_s)))
    print(f"  the fleet drives in central Helsinki; {_habits(fleet)}")
    # The flows' road network: FLEET_ROADS and FLEET_ROADS_CACHE unset, the default match.
    limits = PostedLimits.load(default_extract(), default_cache_dir(os.environ), DEFAULT_MATCH_M)
    expected = Expected.of(messages, RuleBook(load_catalogue(RULES, ZONES), classes), limits)
    with local_brokers(workdir / "brokers") as brokers, ExitStack() as flows:
        print(f"  MQTT  {brokers.mqtt.name} at {brokers.mqtt_url} (MQTT {brokers.mqtt_protocol})")
        print(f"  Kafka {'tansu' if brokers.kafka else 'external'} at {brokers.kafka_brokers}")
        env = _flow_env(brokers, history_dir)
        bridge = flows.enter_context(_flow("bridge", env, workdir))
        bridge.wait_for_event("mqtt_subscribed")
        flows.enter_context(_flow("alerts", {**env, "FLEET_SCORECARDS_OUT": "kafka"}, workdir))
        flows.enter_context(_flow("archive", env, workdir))
        receiver = EmailReceiver(DEMO_SECRET.encode(), verbose=True).start()
        flows.callback(receiver.stop)
        notify_env = {**env, "FLEET_NOTIFY_URL": receiver.url, "FLEET_NOTIFY_SECRET": DEMO_SECRET}
        flows.enter_context(_flow("notify", notify_env, workdir))
        print(f"  flows running: {', '.join('dataflows.' + f for f in FLOWS)}; publishing\n")
        ids = {TELEMETRY: "event_id", ALERTS: "alert_id"}
        tally = TopicTally(brokers.kafka_brokers, [TELEMETRY, DLQ, ALERTS], ids).start()
        published = _publish_with_progress(brokers, messages, rate, tally)
        print(
            "  publishing done; waiting for the last readings to be evaluated (quiet trucks flush)"
        )
        _wait_until_accounted(tally, expected, timeout_s=45)
        _wait_for_emails(receiver, expected.alert_ids, timeout_s=20)
        emailed = set(receiver.emails)
        tally.stop()
        _show_an_alert(tally)
        flows.close()  # the live flows stop; what the archive had not rolled yet is re-read below
        lake = _archive_then_backfill(env, workdir)
        cards = _scorecards(brokers.kafka_brokers, env, workdir)
    drawn = _map(Path(env["FLEET_LAKE_DIR"]), workdir / "backfill-alerts.jsonl", workdir)
    return _summary(expected, len(messages), published, tally, lake, cards, emailed, drawn)


def _habits(fleet: RoadFleetSimulator) -> str:
    counts = Counter(habit.value for habit in fleet.habits().values())
    return "drivers: " + ", ".join(f"{n} {habit}" for habit, n in counts.most_common())


def write_map(lake: Path, alerts: Path, out: Path) -> str:
    """The run's map (``fleetwatch.map``): the extract's roads, the lake's tracks and the
    alerts of ``alerts`` coloured by rule, as a PNG at ``out``; its summary line."""
    from fleetwatch.map import parse_args
    from fleetwatch.map import run as draw_map

    return draw_map(parse_args(["--lake", str(lake), "--alerts", str(alerts), "--out", str(out)]))


def _map(lake: Path, alerts: Path, workdir: Path) -> Path | None:
    """``write_map`` into the workdir; None (and why, printed) when it failed."""
    from fleetwatch.map import DrawError
    from fleetwatch.whatif import UsageError

    try:
        print(f"  {write_map(lake, alerts, workdir / 'map.png')}")
    except (DrawError, UsageError, OSError) as error:
        print(f"  the map was not drawn: {error}")
        return None
    return workdir / "map.png"


def _publish_with_progress(
    brokers: LocalBrokers, messages: list[SimulatedMessage], rate: float, tally: TopicTally
) -> int:
    result: list[int] = []
    batch = [(m.topic, m.payload) for m in messages]
    url = MqttUrl.parse(brokers.mqtt_url)
    publisher = threading.Thread(
        target=lambda: result.append(publish_paced(url, brokers.mqtt_protocol, batch, rate)),
        daemon=True,
    )
    started = time.monotonic()
    publisher.start()
    last_count, last_time = 0, started
    while publisher.is_alive():
        publisher.join(timeout=5)
        now = time.monotonic()
        count = tally.records[TELEMETRY]
        per_second = (count - last_count) / (now - last_time)
        line = f"  t={now - started:5.1f}s  readings {count:7d} ({per_second:6.0f}/s)"
        print(
            f"{line}  dlq {tally.records[DLQ]:5d}  alerts {len(tally.distinct[ALERTS]):4d}",
            flush=True,
        )
        last_count, last_time = count, now
    return result[0] if result else 0


def _wait_until_accounted(tally: TopicTally, expected: Expected, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            tally.distinct[TELEMETRY] >= expected.reading_ids
            and tally.records[DLQ] >= expected.bad
            and tally.distinct[ALERTS] >= expected.alert_ids
        ):
            return
        time.sleep(0.2)


def _wait_for_emails(receiver: EmailReceiver, alert_ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not alert_ids <= set(receiver.emails) and time.monotonic() < deadline:
        time.sleep(0.2)


def _bounded(name: str, env: dict[str, str], workdir: Path, log: str | None = None) -> None:
    flow = FlowProcess(f"dataflows.{name}", env, workdir / f"{log or name}.log")
    if flow.run(timeout_s=300) != 0:
        raise RuntimeError(f"dataflows.{name} failed; see {flow.log_path}")


@dataclass(frozen=True)
class LakeRun:
    """What the end of the run found in the lake."""

    replayed: set[str]  # the backfill's alert ids
    archived: set[str]  # the archived alerts' ids (dataflows.archive_alerts)
    archived_records: int


def _archive_then_backfill(env: dict[str, str], workdir: Path) -> LakeRun:
    """Finish the lake (the archive resumes after its last complete roll and reads to the
    end); close the scorecards' days with a bounded alerts pass (see the module docstring);
    archive fleet.alerts and fleet.scorecards into its alerts/ and scorecards/
    (dataflows.archive_alerts, to the end); then replay the lake's readings through
    dataflows.backfill, scorecards included."""
    print("\n  finishing the lake (dataflows.archive to the end of fleet.telemetry),")
    print("  closing the scorecards' days (dataflows.alerts, bounded, scorecards to Kafka),")
    print("  archiving fleet.alerts and fleet.scorecards (dataflows.archive_alerts), then backfill")
    bounded = {**env, "FLEET_KAFKA_TAIL": "false"}
    _bounded("archive", bounded, workdir)
    replay = {"FLEET_TOPIC_ALERTS": REPLAY_ALERTS, "FLEET_TOPIC_LATE": REPLAY_LATE}
    scorecards = {**bounded, **replay, "FLEET_SCORECARDS_OUT": "kafka"}
    _bounded("alerts", scorecards, workdir, log="alerts-bounded")
    _bounded("archive_alerts", bounded, workdir)
    out = workdir / "backfill-alerts.jsonl"
    cards_out = workdir / "backfill-scorecards.jsonl"
    lake = env["FLEET_LAKE_DIR"]
    backfill = {
        **env,
        "FLEET_BACKFILL_INPUT": lake,
        "FLEET_ALERTS_OUT": str(out),
        "FLEET_SCORECARDS_OUT": str(cards_out),
    }
    _bounded("backfill", backfill, workdir)
    files = sum(1 for _ in Path(lake).glob("date=*/*.parquet"))
    alert_files = len(list(alerts_root(Path(lake)).glob("date=*/*.parquet")))
    card_files = len(scorecard_files(Path(lake)))
    print(
        f"  lake: {files} + {alert_files} (alerts/) + {card_files} (scorecards/) Parquet files"
        f" in {lake}"
    )
    print(f"  backfill alerts in {out}, scorecards in {cards_out}")
    archived = scan_alerts(Path(lake), deduplicate=False).select("alert_id").collect()
    return LakeRun(
        {json.loads(line)["alert_id"] for line in out.read_text().splitlines()},
        set(archived["alert_id"]),
        archived.height,
    )


CardKey = tuple[str | None, str]  # (driver_id, day)
Card = dict[str, Any]  # a scorecard as JSON: the wire's fields


@dataclass(frozen=True)
class ScorecardRun:
    """The scorecards at the end of the run, each source's by (driver_id, day)."""

    streamed: dict[CardKey, Card]  # fleet.scorecards
    streamed_records: int
    replayed: dict[CardKey, Card]  # the backfill's .jsonl
    archived: dict[CardKey, Card]  # scan_scorecards over the lake
    archived_records: int

    @property
    def ok(self) -> bool:
        return (
            bool(self.streamed)
            and self.streamed == self.replayed
            and self.streamed == self.archived
            and self.archived_records == self.streamed_records
        )


def _by_key(documents: list[Card]) -> dict[CardKey, Card]:
    return {(d["driver_id"], d["day"]): d for d in documents}


def _scorecards(bootstrap: str, env: dict[str, str], workdir: Path) -> ScorecardRun:
    """The scorecards of fleet.scorecards, of the backfill and of the lake's scorecards/."""
    streamed = [json.loads(v) for v in read_to_end(bootstrap, SCORECARDS)]
    replayed = [json.loads(line) for line in (workdir / "backfill-scorecards.jsonl").open()]
    lake = Path(env["FLEET_LAKE_DIR"])
    # As on the wire, to compare field for field.
    archived = [
        json.loads(encode_scorecard(c)) for c in scorecards_of(scan_scorecards(lake).collect())
    ]
    records = scan_scorecards(lake, deduplicate=False).select("day").collect().height
    return ScorecardRun(
        _by_key(streamed), len(streamed), _by_key(replayed), _by_key(archived), records
    )


def _same(label: str, ours: dict[CardKey, Card], theirs: dict[CardKey, Card]) -> str:
    if ours == theirs:
        return f"the same {label}, field for field"
    differing = sum(ours.get(k) != theirs.get(k) for k in ours.keys() | theirs.keys())
    return f"DIFFERENT: {differing} of {len(ours.keys() | theirs.keys())} differ"


def _scorecard_table(cards: ScorecardRun) -> None:
    """The drivers' days by safety score: the top 5 and the bottom 5."""
    ranked = sorted(
        (c for c in cards.streamed.values() if c["driver_id"] is not None),
        key=lambda c: (-c["safety_score"], c["driver_id"], c["day"]),
    )
    if not ranked:
        return
    print(f"\n  driver scorecards by safety score ({TIMEZONE} days; {len(ranked)} with a driver)")
    print(f"    {'':6} {'driver':<8} {'day':<10} {'score':>6} {'km':>7} {'readings':>8}  alerts")
    shown = [("top", ranked[:5]), ("bottom", ranked[max(5, len(ranked) - 5) :])]
    for label, rows in shown:
        for n, card in enumerate(rows):
            by_rule = sorted(card["alerts"].items(), key=lambda rule_n: -rule_n[1])
            shown_rules = ", ".join(f"{rule} {n}" for rule, n in by_rule[:2])
            more = f", +{len(by_rule) - 2} more" if len(by_rule) > 2 else ""
            alerts = f"{sum(card['alerts'].values())}" + (
                f" ({shown_rules}{more})" if by_rule else ""
            )
            print(
                f"    {label if n == 0 else '':6} {card['driver_id']!s:<8} {card['day']!s:<10}"
                f" {card['safety_score']:6.1f} {card['distance_km']:7.2f}"
                f" {card['readings']!s:>8}  {alerts}"
            )


def _show_an_alert(tally: TopicTally) -> None:
    if tally.last_value.get(ALERTS):
        print("\n  an alert from fleet.alerts:")
        print("  " + json.dumps(json.loads(tally.last_value[ALERTS]), separators=(", ", ": ")))


def _summary(
    expected: Expected,
    sent: int,
    published: int,
    tally: TopicTally,
    lake: LakeRun,
    cards: ScorecardRun,
    emailed: set[str],
    drawn: Path | None,
) -> int:
    missing = expected.reading_ids - tally.distinct[TELEMETRY]
    got_alerts = tally.distinct[ALERTS]
    distinct = len(tally.distinct[TELEMETRY])
    rows = [
        ("published over MQTT", f"{published} of {sent}"),
        ("readings on fleet.telemetry", f"{tally.records[TELEMETRY]} ({distinct} distinct)"),
        ("resends sent", f"{expected.resends}"),
        ("dead letters on fleet.dlq", f"{tally.records[DLQ]} of {expected.bad} bad payloads"),
        ("dead letters by reason", f"{dict(sorted(tally.reasons.items()))}"),
        ("readings missing", f"{len(missing)}"),
        ("alerts on fleet.alerts", f"{len(got_alerts)} distinct ({tally.records[ALERTS]} records)"),
        ("alerts by rule, expected", f"{dict(sorted(expected.alerts_by_rule.items()))}"),
        (
            "alerts missing / unexpected",
            f"{len(expected.alert_ids - got_alerts)} / {len(got_alerts - expected.alert_ids)}",
        ),
        ("alerts naming a driver", f"{tally.with_driver} ({tally.critical} critical in all)"),
        ("e-mails sent (REST API)", f"{len(emailed)} for {len(got_alerts)} alerts"),
        (
            "alerts archived in the lake",
            f"{len(lake.archived)} distinct ({lake.archived_records} records), "
            f"{'the same' if lake.archived == got_alerts else 'DIFFERENT'} ids",
        ),
        (
            "backfill over the lake",
            f"{len(lake.replayed)} alerts, "
            f"{'the same' if lake.replayed == got_alerts else 'DIFFERENT'} ids",
        ),
        (
            "scorecards on fleet.scorecards",
            f"{len(cards.streamed)} drivers' days ({cards.streamed_records} records; "
            f"{sum(k[0] is None for k in cards.streamed)} of readings with no driver)",
        ),
        ("scorecards of the backfill", _same("as streamed", cards.replayed, cards.streamed)),
        (
            "scorecards archived",
            f"{len(cards.archived)} ({cards.archived_records} records), "
            + _same("as streamed", cards.archived, cards.streamed),
        ),
        ("map of the run", str(drawn) if drawn else "NOT DRAWN"),
    ]
    _scorecard_table(cards)
    print("\nsummary")
    for label, value in rows:
        print(f"  {label:<30} {value}")
    ok = (
        not missing
        and tally.records[DLQ] >= expected.bad
        and published == sent
        and got_alerts == expected.alert_ids
        and lake.replayed == got_alerts
        and lake.archived == got_alerts
        and lake.archived_records >= tally.records[ALERTS]
        and emailed == got_alerts
        and cards.ok
        and drawn is not None
    )
    print(
        "  result: every message accounted for, alerts as expected, scorecards agree"
        if ok
        else "  result: MISMATCH (see above)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages per second")
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=ROOT / "demo-run")
    args = parser.parse_args(argv)
    try:
        return run(args.duration, args.rate, args.trucks, args.workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
