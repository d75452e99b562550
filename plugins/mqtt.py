"""MQTT: a resident subscriber in cxd-ingest that hands JSON messages to the speed layer.

Declared like any source::

    - name: plant_temps
      type: mqtt
      kind: time_series
      options:
        host: broker.local          # default 127.0.0.1
        port: 1883
        topics: ["plant/+/temp"]    # topic filters feeding this dataset, or a mapping
                                    # {"plant/+/temp": plant_temps, "plant/+/hum": plant_hum}
        event_id: event_id          # a column holding each event's id: redeliveries stored once
        topic_column: topic         # optional column that receives the message's topic
        keepalive: 30               # seconds between heartbeats (PINGREQ)
        connect_timeout: 10
        reconnect_delay: {min: 1, max: 30}
        username: cxd
      secrets: {password: ...}
      columns: [...]

Each message is one JSON object (or an array of them) validated like a webhook record.
Messages that are not JSON or fail validation go to the dead-letter stream
``cxd:{ds}:dead`` with the reason. Messages are received at QoS 1 and acknowledged to the
broker only once they are in Redis; the subscriber reconnects by itself with backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import redis

from cxd.catalog import SourceSpec, parse_duration
from cxd.errors import TransientError
from cxd.stores import Stores
from plugins import health
from plugins.base import SourcePlugin
from plugins.exceptions import PluginConfigError
from plugins.records import DEDUP_TTL, batch_problems, dead_letter, store_once

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0


def _number(value: Any, name: str, low: float, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        problems.append(f"options.{name} must be a number >= {low:g}; got {value!r}")


class MqttSource(SourcePlugin):
    """A resident source: cxd-ingest subscribes to its topics on the broker."""

    type = "mqtt"
    resident = True

    def validate(self) -> list[str]:
        problems: list[str] = []
        opts = self.options
        if not isinstance(opts.get("host", "127.0.0.1"), str):
            problems.append("options.host must be a host name")
        port = opts.get("port", 1883)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            problems.append(f"options.port must be a port number; got {port!r}")
        topics = opts.get("topics")
        if isinstance(topics, str):
            topics = [topics]
        if not topics or not isinstance(topics, list | dict):
            problems.append("options.topics is required: a list of topic filters or a mapping")
        else:
            for flt in topics:
                if not isinstance(flt, str) or not _valid_filter(flt):
                    problems.append(f"options.topics: {flt!r} is not a valid MQTT topic filter")
            if isinstance(topics, dict):
                for flt, target in topics.items():
                    if target is not None and not isinstance(target, str):
                        problems.append(f"options.topics[{flt!r}] must name a dataset")
        if opts.get("qos", 1) not in (0, 1):
            problems.append("options.qos must be 0 or 1")
        _number(opts.get("keepalive", 30), "keepalive", 5, problems)
        _number(opts.get("connect_timeout", 10), "connect_timeout", 0.1, problems)
        delay = opts.get("reconnect_delay", {})
        if not isinstance(delay, dict) or set(delay) - {"min", "max"}:
            problems.append("options.reconnect_delay must be a mapping {min: 1, max: 30}")
        else:
            _number(delay.get("min", 1), "reconnect_delay.min", 1, problems)
            _number(delay.get("max", 30), "reconnect_delay.max", 1, problems)
        for name in ("event_id", "topic_column"):
            col = opts.get(name)
            if col is not None and col not in self.spec.column_names:
                problems.append(f"options.{name} {col!r} is not a declared column")
        try:
            parse_duration(opts.get("dedup_ttl", DEDUP_TTL))
        except ValueError as exc:
            problems.append(f"options.dedup_ttl: {exc}")
        return problems

    def fetch(self, cursor):
        return iter(())

    def decode(self, topic: str, message: bytes) -> dict[str, Any] | list[dict[str, Any]]:
        """One message as a record (or a list of them): JSON, plus the topic if asked.

        A plugin of ``type: mqtt`` may define its own ``decode(topic, message)``; cxd-ingest
        then uses it instead (a ValueError or any other error dead-letters the message).
        """
        doc = json.loads(message)
        column = self.options.get("topic_column")
        if column:
            for record in doc if isinstance(doc, list) else [doc]:
                if isinstance(record, dict):
                    record.setdefault(column, topic)
        return doc

    def routes(self) -> list[tuple[str, str]]:
        """(topic filter, dataset) pairs, first match wins."""
        topics = self.options["topics"]
        if isinstance(topics, str):
            topics = [topics]
        if isinstance(topics, list):
            return [(t, self.spec.name) for t in topics]
        return [(t, ds or self.spec.name) for t, ds in topics.items()]


def _valid_filter(flt: str) -> bool:
    if not flt or "\0" in flt:
        return False
    parts = flt.split("/")
    for i, part in enumerate(parts):
        if "#" in part and (part != "#" or i != len(parts) - 1):
            return False
        if "+" in part and part != "+":
            return False
    return True


def fingerprint(spec: SourceSpec) -> str:
    """Changes whenever anything the subscriber depends on changes (secrets included)."""
    body = json.dumps([spec.public(), spec.secrets], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


class Subscriber:
    """One MQTT connection of one source: subscribe, validate, store, acknowledge."""

    def __init__(
        self,
        stores: Stores,
        source: MqttSource,
        lookup: Callable[[str], SourceSpec],
        decode: Callable[[str, bytes], Any] | None = None,
    ):
        self.stores = stores
        self.source = source
        self.decode = decode or source.decode
        self.name = source.spec.name
        self.lookup = lookup
        self.connected = False
        self._stopping = threading.Event()
        opts = source.options
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=str(opts.get("client_id") or f"cxd-{self.name}"),
            clean_session=False,  # the broker keeps unacknowledged messages while we reconnect
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self.client.connect_timeout = float(opts.get("connect_timeout", 10))
        delay = opts.get("reconnect_delay", {})
        self.client.reconnect_delay_set(int(delay.get("min", 1)), int(delay.get("max", 30)))
        if opts.get("username"):
            self.client.username_pw_set(str(opts["username"]), source.secrets.get("password"))
        if opts.get("tls"):
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    @property
    def address(self) -> str:
        """host:port of the broker."""
        return f"{self.source.options.get('host', '127.0.0.1')}:{self.source.options.get('port', 1883)}"

    def start(self) -> None:
        """Connect in the background; paho's thread reconnects with backoff for ever."""
        opts = self.source.options
        health.set_connected(self.stores.redis, self.name, "mqtt", False)
        self.client.connect_async(
            str(opts.get("host", "127.0.0.1")),
            int(opts.get("port", 1883)),
            keepalive=int(opts.get("keepalive", 30)),
        )
        self.client.loop_start()
        log.info("mqtt source %s: connecting to %s", self.name, self.address)

    def stop(self, *, forget: bool = False) -> None:
        """Disconnect and stop the network thread.

        The broker keeps the session (subscriptions and unacknowledged messages) for the
        next start; with ``forget`` (the source was changed or removed) the topics are
        unsubscribed first, so a changed declaration does not keep receiving old topics.
        """
        self._stopping.set()
        if forget and self.connected:
            done = threading.Event()
            self.client.on_unsubscribe = lambda *args: done.set()
            self.client.unsubscribe([flt for flt, _ in self.source.routes()])
            done.wait(5.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected = False
        with _quiet():
            health.set_connected(self.stores.redis, self.name, "mqtt", False)

    def heartbeat(self) -> None:
        """Refresh the health heartbeat (cxd-ingest is alive) with the connection state."""
        health.heartbeat(self.stores.redis, self.name, "mqtt", self.connected)

    # --- paho callbacks (network thread; they must never raise) -------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._error(f"the broker {self.address} refused the connection: {reason_code}")
            return
        qos = int(self.source.options.get("qos", 1))
        client.subscribe([(flt, qos) for flt, _ in self.source.routes()])

    def _on_connect_fail(self, client, userdata) -> None:
        self._error(f"cannot connect to the broker {self.address}; retrying with backoff")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        if self._stopping.is_set():
            return
        self._error(f"lost the connection to {self.address} ({reason_code}); reconnecting")
        with _quiet():
            health.set_connected(self.stores.redis, self.name, "mqtt", False)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            self._error(f"the broker refused {len(refused)} subscription(s): {refused[0]}")
            return
        self.connected = True  # connected means receiving: the broker confirmed the topics
        with _quiet():
            health.set_connected(self.stores.redis, self.name, "mqtt", True)
        log.info("mqtt source %s: subscribed at %s", self.name, self.address)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            if self.handle(message.topic, message.payload):
                client.ack(message.mid, message.qos)
        except Exception as exc:  # never let an error kill paho's network thread
            log.exception("mqtt source %s: message on %s failed", self.name, message.topic)
            self._error(f"{type(exc).__name__}: {exc}")

    # --- the work ---------------------------------------------------------------------------

    def target(self, topic: str) -> str | None:
        """The dataset a topic feeds (first matching filter), or None."""
        for flt, dataset in self.source.routes():
            if mqtt.topic_matches_sub(flt, topic):
                return dataset
        return None

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one message; return True when it may be acknowledged to the broker."""
        dataset = self.target(topic) or self.name
        try:
            decoded = self.decode(topic, payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return self._dead(dataset, topic, payload, f"the payload is not JSON: {exc}")
        except Exception as exc:  # a user's decode() may fail in any way
            return self._dead(
                dataset, topic, payload, f"decode failed: {type(exc).__name__}: {exc}"
            )
        records = decoded if isinstance(decoded, list) else [decoded]
        spec = self.lookup(dataset)
        opts = self.source.options
        event_id = opts.get("event_id") if opts.get("event_id") in spec.column_names else None
        bad = batch_problems(spec, records, event_id)
        if bad:
            reason = "; ".join(f"record {b['index']} {b['field']}: {b['reason']}" for b in bad)
            return self._dead(dataset, topic, payload, reason)
        ttl = parse_duration(opts.get("dedup_ttl", DEDUP_TTL))
        delay = 0.2
        while not self._stopping.is_set():
            try:
                stored = store_once(self.stores.redis, spec, records, event_id=event_id, ttl=ttl)
            except (TransientError, redis.RedisError) as exc:
                # hold the message (unacknowledged) until it can be stored
                self._error(f"cannot store a message from {topic} yet: {exc}")
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            with _quiet():
                health.count_messages(self.stores.redis, self.name, len(records), stored.duplicates)
            return True
        return False

    def _dead(self, dataset: str, topic: str, payload: bytes, reason: str) -> bool:
        dead_letter(self.stores.redis, dataset, payload, reason, topic=topic, source=self.name)
        log.warning("mqtt source %s: message on %s dead-lettered: %s", self.name, topic, reason)
        with _quiet():
            health.count_error(self.stores.redis, self.name, reason, dead_letter=True)
        return True

    def _error(self, reason: str) -> None:
        log.warning("mqtt source %s: %s", self.name, reason)
        with _quiet():
            health.count_error(self.stores.redis, self.name, reason)


class _quiet:
    """Swallow Redis errors while recording health: health must never stop the data."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and isinstance(exc, redis.RedisError):
            log.debug("health not recorded: %s", exc)
            return True
        return False


class Subscribers:
    """Every MQTT source's subscriber in this process, kept in step with the declarations."""

    def __init__(self, stores: Stores):
        self.stores = stores
        self.running: dict[str, tuple[str, Subscriber]] = {}
        self.specs: dict[str, SourceSpec] = {}
        self.failed: dict[str, str] = {}  # name -> fingerprint of a declaration that failed
        self._beat = 0.0

    def lookup(self, name: str) -> SourceSpec:
        """A declared source by name (as of the last :meth:`sync`)."""
        from cxd.catalog import get_source

        return self.specs.get(name) or get_source(self.stores.db, name)

    def sync(self, specs: list[SourceSpec]) -> None:
        """Start subscribers of new MQTT sources, restart changed ones, stop removed ones."""
        from plugins.registry import plugin_for

        self.specs = {s.name: s for s in specs}
        wanted = {s.name: s for s in specs if s.type == "mqtt"}
        for name in list(self.running):
            if name not in wanted or self.running[name][0] != fingerprint(wanted[name]):
                log.info("mqtt source %s: stopping (removed or changed)", name)
                self.running.pop(name)[1].stop(forget=True)
                if name not in wanted:
                    with _quiet():
                        health.clear_health(self.stores.redis, name)
        for name, spec in wanted.items():
            if name in self.running or self.failed.get(name) == fingerprint(spec):
                continue
            try:
                plugin = plugin_for(spec, self.stores.settings.plugin_dir)
                source = plugin if isinstance(plugin, MqttSource) else MqttSource(spec)
                problems = source.validate() if source is not plugin else []
                if problems:
                    raise PluginConfigError(f"source {name!r}: " + "; ".join(problems))
            except Exception as exc:  # reported once per declaration, not every round
                self.failed[name] = fingerprint(spec)
                log.error("mqtt source %s is not started: %s", name, exc)
                with _quiet():
                    health.count_error(self.stores.redis, name, str(exc))
                continue
            self.failed.pop(name, None)
            decode = getattr(plugin, "decode", None) if plugin is not source else None
            subscriber = Subscriber(self.stores, source, self.lookup, decode)
            subscriber.start()
            self.running[name] = (fingerprint(spec), subscriber)
        if time.monotonic() - self._beat >= HEARTBEAT_EVERY:
            self._beat = time.monotonic()
            for _, subscriber in self.running.values():
                with _quiet():
                    subscriber.heartbeat()

    def stop_all(self) -> None:
        """Stop every subscriber."""
        for _, subscriber in self.running.values():
            subscriber.stop()
        self.running.clear()
