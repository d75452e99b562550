"""MQTT subscribers against a real Mosquitto the test starts: storing, dead letters, dedup,
holding messages until Redis has them, and reconnecting after the broker is killed."""

from __future__ import annotations

import json

import pytest

from cxd.catalog import parse_source, save_source
from plugins.health import read_health
from plugins.mqtt import Subscribers
from plugins.records import dead_letter_key
from speed.stream import read_after
from tests.plugins.brokers import broker, eventually, publish  # noqa: F401

pytestmark = pytest.mark.mqtt

COLUMNS = [
    {"name": "event_id", "type": "text"},
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "temp", "type": "double precision"},
    {"name": "topic", "type": "text"},
]


def declare(stores, port, name="temps", **options):
    spec = parse_source(
        {
            "name": name,
            "type": "mqtt",
            "kind": "time_series",
            "columns": COLUMNS,
            "time_column": "at",
            "options": {
                "port": port,
                "topics": ["plant/+/temp"],
                "event_id": "event_id",
                "topic_column": "topic",
                "keepalive": 5,
                "reconnect_delay": {"min": 1, "max": 1},
                **options,
            },
        }
    )
    save_source(stores.db, spec)
    return spec


def reading(n, sensor="s1"):
    return json.dumps(
        {"event_id": f"e{n}", "sensor": sensor, "at": f"2026-05-05T10:00:{n:02d}Z", "temp": 20 + n}
    )


def stored(stores, name="temps"):
    return [rec for _, rec in read_after(stores.redis, name, "0-0")]


@pytest.fixture
def subscribers(stores):
    subs = Subscribers(stores)
    yield subs
    subs.stop_all()


def connected(stores, subs, name="temps"):
    from cxd.catalog import list_sources

    subs.sync(list_sources(stores.db))
    return eventually(
        lambda: (read_health(stores.redis, name) or {}).get("connected"),
        timeout=30,
        what=f"{name} connected",
    )


def test_published_messages_land_in_the_stream(stores, broker, subscribers):  # noqa: F811
    declare(stores, broker.port)
    connected(stores, subscribers)
    publish(broker.port, [(f"plant/{s}/temp", reading(n, s)) for n, s in enumerate("abc")])
    publish(broker.port, [("plant/a/humidity", reading(9))])  # not subscribed
    rows = eventually(lambda: len(stored(stores)) == 3 and stored(stores), what="3 events")
    assert [(r["sensor"], r["topic"], r["temp"]) for r in rows] == [
        ("a", "plant/a/temp", 20),
        ("b", "plant/b/temp", 21),
        ("c", "plant/c/temp", 22),
    ]
    status = read_health(stores.redis, "temps")
    assert status["messages"] == 3 and status["errors"] == 0
    assert status["last_message_at"] is not None


def test_bad_messages_go_to_the_dead_letter_stream(stores, broker, subscribers):  # noqa: F811
    declare(stores, broker.port)
    connected(stores, subscribers)
    publish(
        broker.port,
        [
            ("plant/a/temp", b"\x00not json"),
            ("plant/a/temp", json.dumps({"event_id": "e1", "at": "soon", "temp": "hot"})),
            ("plant/a/temp", reading(2)),
        ],
    )
    eventually(lambda: stores.redis.xlen(dead_letter_key("temps")) == 2, what="2 dead letters")
    dead = stores.redis.xrange(dead_letter_key("temps"))
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert "not JSON" in reasons[0]
    assert "at:" in reasons[1] and "temp:" in reasons[1]
    assert dead[0][1][b"d"] == b"\x00not json"  # kept as received
    assert dead[1][1][b"topic"] == b"plant/a/temp"
    eventually(lambda: [r["event_id"] for r in stored(stores)] == ["e2"], what="the good one")
    status = read_health(stores.redis, "temps")
    assert status["dead_letters"] == 2 and status["errors"] == 2


def test_redelivered_events_are_stored_once(stores, broker, subscribers):  # noqa: F811
    declare(stores, broker.port)
    connected(stores, subscribers)
    publish(broker.port, [("plant/a/temp", reading(1)), ("plant/a/temp", reading(2))])
    publish(broker.port, [("plant/a/temp", reading(1)), ("plant/a/temp", reading(3))])
    eventually(
        lambda: (read_health(stores.redis, "temps") or {}).get("messages") == 4, what="4 messages"
    )
    assert [r["event_id"] for r in stored(stores)] == ["e1", "e2", "e3"]
    assert read_health(stores.redis, "temps")["duplicates"] == 1


def test_a_message_is_held_until_redis_takes_it(stores, broker, subscribers, monkeypatch):  # noqa: F811
    import plugins.mqtt
    from speed.exceptions import Backpressure

    real, calls = plugins.mqtt.store_once, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise Backpressure("the backlog is at its cap")
        return real(*args, **kwargs)

    monkeypatch.setattr(plugins.mqtt, "store_once", flaky)
    declare(stores, broker.port)
    connected(stores, subscribers)
    publish(broker.port, [("plant/a/temp", reading(1))])
    eventually(lambda: len(stored(stores)) == 1, what="the event after two refusals")
    assert len(calls) == 3
    assert "backlog" in read_health(stores.redis, "temps")["last_error"]


def test_subscriber_reconnects_after_the_broker_is_killed(stores, broker, subscribers):  # noqa: F811
    declare(stores, broker.port)
    connected(stores, subscribers)
    publish(broker.port, [("plant/a/temp", reading(1))])
    eventually(lambda: len(stored(stores)) == 1, what="first event")
    broker.kill()
    eventually(
        lambda: (read_health(stores.redis, "temps") or {}).get("connected") is False,
        what="disconnected",
    )
    assert "lost the connection" in read_health(stores.redis, "temps")["last_error"]
    broker.start()
    eventually(lambda: read_health(stores.redis, "temps")["connected"], what="reconnected")
    publish(broker.port, [("plant/b/temp", reading(2, "b"))])
    eventually(lambda: len(stored(stores)) == 2, what="event after the restart")
    assert [r["event_id"] for r in stored(stores)] == ["e1", "e2"]


def test_topics_map_to_datasets_and_changes_restart_the_subscriber(stores, broker, subscribers):  # noqa: F811
    from cxd.catalog import list_sources

    declare(stores, broker.port, name="humid", topics=["unused/#"])
    declare(stores, broker.port, topics={"plant/+/temp": "temps", "plant/+/hum": "humid"})
    connected(stores, subscribers)
    publish(broker.port, [("plant/a/temp", reading(1)), ("plant/a/hum", reading(2))])
    eventually(lambda: len(stored(stores, "humid")) == 1, what="routed to humid")
    eventually(lambda: len(stored(stores)) == 1, what="routed to temps")
    # changing the declaration restarts the subscriber with the new topics
    declare(stores, broker.port, topics=["plant/+/t"])
    first = subscribers.running["temps"][1]
    subscribers.sync(list_sources(stores.db))
    assert subscribers.running["temps"][1] is not first
    eventually(lambda: subscribers.running["temps"][1].connected, what="reconnected")
    publish(
        broker.port,
        [("plant/a/t", reading(3)), ("plant/a/temp", reading(4)), ("plant/a/t", reading(5))],
    )
    eventually(lambda: len(stored(stores)) == 3, what="new topic")
    assert [r["event_id"] for r in stored(stores)] == ["e1", "e3", "e5"]  # old topic dropped
    # removing the source stops it
    from cxd.catalog import delete_source

    delete_source(stores.db, "temps")
    subscribers.sync(list_sources(stores.db))
    assert "temps" not in subscribers.running
    assert read_health(stores.redis, "temps") is None


def test_settings_problems_are_reported_together(stores):
    from plugins.exceptions import PluginConfigError
    from plugins.registry import plugin_for

    spec = parse_source(
        {
            "name": "temps",
            "type": "mqtt",
            "columns": COLUMNS,
            "time_column": "at",
            "options": {"port": 0, "topics": ["a/#/b"], "qos": 2, "event_id": "nope"},
        }
    )
    with pytest.raises(PluginConfigError) as err:
        plugin_for(spec)
    assert len(err.value.details["problems"]) == 4


def test_a_badly_declared_source_is_reported_once_and_not_started(stores, subscribers):
    from cxd.catalog import list_sources

    declare(stores, 1883, topics=["a/#/b"])  # stored without the plugin's check (as from YAML)
    for _ in range(3):
        subscribers.sync(list_sources(stores.db))
    assert subscribers.running == {}
    status = read_health(stores.redis, "temps")
    assert status["errors"] == 1
    assert "not a valid MQTT topic filter" in status["last_error"]


PLUGIN = """
import json
from plugins.base import SourcePlugin


class Plant(SourcePlugin):
    type = "mqtt"
    resident = True

    def decode(self, topic, message):
        _, sensor, _ = topic.split("/", 2)
        body = json.loads(message)
        return {"event_id": body["id"], "sensor": sensor, "at": body["ts"], "temp": float(body["v"])}
"""


def test_a_plugin_decodes_messages_its_own_way(stores, settings, broker, subscribers):  # noqa: F811
    settings.plugin_dir.mkdir()
    (settings.plugin_dir / "plant.py").write_text(PLUGIN)
    spec = declare(stores, broker.port)
    spec.plugin = "plant"
    save_source(stores.db, spec)
    connected(stores, subscribers)
    publish(
        broker.port,
        [
            ("plant/s7/temp", json.dumps({"id": "e1", "ts": "2026-05-05T10:00:00Z", "v": "7.5"})),
            ("plant/s7/temp", json.dumps({"id": "e2", "ts": "2026-05-05T10:00:01Z"})),
        ],
    )
    eventually(lambda: stores.redis.xlen(dead_letter_key("temps")) == 1, what="a dead letter")
    assert [(r["sensor"], r["temp"]) for r in stored(stores)] == [("s7", 7.5)]
    reason = stores.redis.xrange(dead_letter_key("temps"))[0][1][b"reason"].decode()
    assert reason == "decode failed: KeyError: 'v'"
