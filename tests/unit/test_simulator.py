"""The simulator is deterministic and its messages are what it claims they are."""

from __future__ import annotations

from collections import Counter

from devtools.simulator import FleetConfig, FleetSimulator
from domain.dead_letters import PAYLOAD_REASONS, Reason
from domain.readings import Reading, Rejection, _validate_payload, truck_id_from_topic

CONFIG = FleetConfig(
    trucks=30, seed=7, bad_share=0.05, resend_share=0.03, disorder_s=3.0, episode_chance=0.05
)


def validated(
    raw: bytes, topic_truck_id: str | None = None, *, not_after_ms: int | None = None
) -> Reading | Rejection:
    """The field-by-field validation alone, without the canonical fast path."""
    return _validate_payload(raw, topic_truck_id, not_after_ms)


def test_same_seed_same_messages() -> None:
    first = list(FleetSimulator(CONFIG).messages(2_000))
    second = list(FleetSimulator(CONFIG).messages(2_000))
    assert first == second
    other = list(FleetSimulator(FleetConfig(trucks=30, seed=8)).messages(2_000))
    assert [m.payload for m in other] != [m.payload for m in first]


def test_messages_validate_as_the_simulator_says() -> None:
    messages = list(FleetSimulator(CONFIG).messages(5_000))
    assert len(messages) == 5_000
    reasons: Counter[Reason] = Counter()
    for message in messages:
        outcome = validated(
            message.payload, truck_id_from_topic(message.topic, "fleet/+/telemetry")
        )
        if message.reading is None:
            assert isinstance(outcome, Rejection)
            assert outcome.reason is message.expected_reason
            reasons[outcome.reason] += 1
        else:
            assert outcome == message.reading
    assert set(reasons) == PAYLOAD_REASONS, "every payload reason is exercised"


def test_resends_repeat_an_earlier_reading() -> None:
    messages = list(FleetSimulator(CONFIG).messages(5_000))
    originals = {m.payload for m in messages if not m.is_resend and m.reading is not None}
    resends = [m for m in messages if m.is_resend]
    assert resends
    assert all(m.payload in originals for m in resends)


def test_speeding_episodes_and_critical_spikes_occur() -> None:
    config = FleetConfig(trucks=20, seed=3, episode_chance=0.02, spike_chance=0.005)
    speeds = [m.reading.speed_kmh for m in FleetSimulator(config).messages(20_000) if m.reading]
    assert sum(speed > 130 for speed in speeds) > 10
    assert sum(90 < speed <= 130 for speed in speeds) > 200
    assert min(speeds) >= 0


def test_disorder_is_bounded() -> None:
    config = FleetConfig(trucks=5, seed=2, disorder_s=4.0, interval_s=1.0)
    latest: dict[str, int] = {}
    worst = 0
    for message in FleetSimulator(config).messages(5_000):
        reading = message.reading
        assert reading is not None
        previous = latest.get(reading.truck_id, reading.ts_ms)
        worst = max(worst, previous - reading.ts_ms)
        latest[reading.truck_id] = max(previous, reading.ts_ms)
    assert 0 < worst <= 4_000


def test_all_timestamp_forms_are_used() -> None:
    payloads = [m.payload for m in FleetSimulator(FleetConfig(trucks=5)).messages(500)]
    assert any(b'"ts":17' in p for p in payloads), "integer epoch ms"
    assert any(b'+02:00"' in p for p in payloads), "offset"
    assert any(b'Z"' in p for p in payloads), "Zulu"


def test_valid_readings_are_readings() -> None:
    assert all(isinstance(m.reading, Reading) for m in FleetSimulator(FleetConfig()).messages(100))
