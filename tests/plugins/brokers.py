"""A real Mosquitto broker started by the test on a free port (killed and restarted at will)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tests.helpers import eventually  # noqa: F401  (re-exported for the plugin tests)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, up: bool = True) -> None:
    """Wait until something listens on ``port`` (or, with ``up=False``, nothing does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} is still {'closed' if up else 'open'} after {timeout}s")


class Broker:
    """``mosquitto -p PORT`` as a child process."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        wait_for_port(self.port, up=False)


@pytest.fixture
def broker():
    """A running Mosquitto on a free port; ``broker.kill()`` / ``broker.start()`` in the test."""
    if not shutil.which(MOSQUITTO):
        pytest.skip("mosquitto is not installed (scripts/system-deps.sh installs it)")
    b = Broker(free_port()).start()
    yield b
    b.kill()


def publish(port: int, messages: list[tuple[str, bytes | str]]) -> None:
    """Publish (topic, payload) pairs at QoS 1 and wait until the broker has each."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
