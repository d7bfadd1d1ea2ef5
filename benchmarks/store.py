"""DynamoDB store throughput: dataflows.store draining a pre-filled topic into dynalite
(a DynamoDB-API server from npm, on this machine), 1 process; items/s written.

``python -m benchmarks.store [--readings N]``. The flow reads the topic to its end
(FLEET_KAFKA_TAIL=false); its time is the process's wall time, start-up included. Every
reading must be in the table afterwards. No baseline is run: dynalite (Node.js, in memory)
is the limit here, not the flow, so the figure says what the test server takes, and the
flow's own cost is read from its profile. Point --endpoint at a real DynamoDB-API server to
measure that instead.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from benchmarks.alerts import PARTITIONS, prefill, timed
from connectors.dynamodb import create_table
from devtools.launcher import FlowProcess
from devtools.localbrokers import local_brokers
from devtools.localdynamo import AWS_ENV, dynalite

ROOT = Path(__file__).resolve().parents[1]


def run(readings: int, trucks: int, endpoint: str | None) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="fleetwatch-store-") as tmp,
        local_brokers(Path(tmp) / "brokers") as brokers,
    ):
        if endpoint:
            return _measure(brokers.kafka_brokers, endpoint, readings, trucks, Path(tmp))
        with dynalite(Path(tmp)) as url:
            return _measure(brokers.kafka_brokers, url, readings, trucks, Path(tmp))


def _measure(bootstrap: str, url: str, readings: int, trucks: int, tmp: Path) -> dict[str, Any]:
    prefill(bootstrap, "bench.telemetry", readings, trucks)
    table = f"bench-{int(time.time())}"
    os.environ.update({k: os.environ.get(k, v) for k, v in AWS_ENV.items()})
    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
    create_table(client, table)
    env = {
        "FLEET_KAFKA_BROKERS": bootstrap,
        "FLEET_TOPIC_TELEMETRY": "bench.telemetry",
        "FLEET_TOPIC_PARTITIONS": str(PARTITIONS),
        "FLEET_KAFKA_TAIL": "false",
        "FLEET_DYNAMODB_TABLE": table,
        "FLEET_DYNAMODB_ENDPOINT_URL": url,
        "FLEET_DYNAMODB_REGION": "us-east-1",
    }
    seconds = timed([FlowProcess("dataflows.store", env, tmp / "store.log")])
    stored = client.describe_table(TableName=table)["Table"].get("ItemCount", 0)
    count = sum(
        page["Count"]
        for page in client.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    )
    if count < readings:
        raise RuntimeError(f"only {count} items for {readings} readings")
    result = {
        "readings": readings,
        "trucks": trucks,
        "items": count,
        "seconds": round(seconds, 2),
        "readings_per_s": round(readings / seconds),
        "items_per_s": round(count / seconds),
        "item_count_reported": stored,
    }
    print(
        f"store: {readings} readings -> {count} items in {seconds:.1f} s = "
        f"{readings / seconds:,.0f} readings/s ({count / seconds:,.0f} items/s)",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store", description=__doc__)
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--trucks", type=int, default=500)
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "store.json")
    args = parser.parse_args(argv)
    results = run(args.readings, args.trucks, args.endpoint)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
