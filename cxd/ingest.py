"""cxd-ingest: registers sources and their schedules, hosts resident plugins (the webhook
receiver on CXD_INGEST_PORT) and keeps schedules registered."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading

from flask import Flask

from cxd import logs, web
from cxd.config import Settings, load_settings
from cxd.errors import ConfigError
from cxd.stores import open_stores

log = logging.getLogger(__name__)
KEEPER_INTERVAL = 1.0
DEFAULT_WORKERS = 2
DEFAULT_THREADS = 16


def create_ingest_app(config: dict | None = None) -> Flask:
    """The resident plugins' HTTP app (webhook receiver)."""
    app = Flask("cxd.ingest")
    app.config.update(config or {})
    stores = app.config.get("CXD_STORES") or open_stores(
        load_settings(), application_name="cxd-ingest"
    )
    app.extensions["cxd.stores"] = stores
    web.install(app)
    from plugins.webhook import HookFastPath, hooks

    app.register_blueprint(hooks)
    app.wsgi_app = HookFastPath(app.wsgi_app, stores)  # POST /hooks/<ds> without Flask
    return app


def keeper(settings: Settings, stop: threading.Event) -> None:
    """Background duties: keep schedules registered and hand live events to batch."""
    residents = ResidentPlugins(open_stores(settings, application_name="cxd-ingest-resident"))
    from batch.jobs import RECOVER_EVERY, recover
    from batch.schedule import register_schedules
    from cxd.catalog import list_sources
    from speed.loader import drain, drainer, register_schedule

    stores = open_stores(settings, application_name="cxd-ingest-keeper")
    draining = drainer(stores)
    rounds = 0
    while not stop.is_set():
        rounds += 1
        try:
            if rounds % RECOVER_EVERY == 1:
                recover(stores)  # runs whose worker died mid-run are enqueued again
            specs = list_sources(stores.db)
            residents.sync(specs)
            register_schedules(stores, specs)
            prune_schedules(stores, specs)
            register_schedule(stores)  # the speed loader's rq job, for when no keeper runs
            for spec in specs:
                if spec.type in ("webhook", "mqtt"):
                    drain(stores, spec.name, loader=draining)
        except Exception:
            log.exception("ingest keeper round failed; retrying")
        stop.wait(KEEPER_INTERVAL)
    residents.stop()


def prune_schedules(stores, specs) -> list[str]:
    """Cancel schedule entries no declared source wants any more (a source deleted or
    changed through the API while this keeper was registering the old declaration)."""
    from batch.schedule import entry_ids, scheduler

    sch = scheduler(stores)
    wanted = {job_id for spec in specs for job_id in entry_ids(spec)}
    stale = [
        job_id
        for raw in stores.redis.zrange(sch.scheduled_jobs_key, 0, -1)
        if (job_id := raw.decode()).startswith("cxd-schedule-") and job_id not in wanted
    ]
    for job_id in stale:
        sch.cancel(job_id)
        log.info("cancelled schedule %s: its source no longer wants it", job_id)
    return stale


class ResidentPlugins:
    """The resident plugins this cxd-ingest hosts: MQTT subscribers (started, restarted
    and stopped as sources come, change and go), the file sources' folder watchers and
    the webhook receiver's heartbeat."""

    def __init__(self, stores):
        from plugins.file import FolderWatchers
        from plugins.mqtt import Subscribers

        self.stores = stores
        self.mqtt = Subscribers(stores)
        self.folders = FolderWatchers(stores)
        self._beat = 0.0

    def sync(self, specs) -> None:
        """Bring the running plugins in step with ``specs``; refresh their health heartbeat."""
        import time

        from plugins import health

        try:
            self.folders.sync(specs)  # catches its own errors, one folder at a time
            self.mqtt.sync(specs)
        finally:
            if time.monotonic() - self._beat >= 5.0:
                self._beat = time.monotonic()
                for spec in specs:
                    if spec.type == "webhook":
                        health.heartbeat(self.stores.redis, spec.name, "webhook", True)

    def stop(self) -> None:
        """Stop every subscriber (the broker keeps their sessions for the next start)."""
        self.mqtt.stop_all()


def ingest_workers() -> int:
    """Webhook receiver processes: ``CXD_INGEST_WORKERS`` [2]."""
    from cxd.httpserver import whole_number_setting

    return whole_number_setting("CXD_INGEST_WORKERS", DEFAULT_WORKERS)


def ingest_threads() -> int:
    """Threads per webhook receiver process: ``CXD_INGEST_THREADS`` [16]."""
    from cxd.httpserver import whole_number_setting

    return whole_number_setting("CXD_INGEST_THREADS", DEFAULT_THREADS)


class KeeperProcess:
    """The keeper (:func:`keeper`) in a child process of its own, restarted if it dies.

    The webhook receiver's processes answer requests only: draining the speed layer into
    Postgres, registering schedules and the resident plugins (MQTT, folder watchers) would
    otherwise compete with them for the interpreter lock and add milliseconds to answers.
    """

    def __init__(self, restart_delay: float = 1.0):
        self.restart_delay = restart_delay
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cxd.ingest", "keeper", str(os.getpid())])

    def start(self) -> None:
        """Start the keeper and a thread that restarts it whenever it exits."""
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, name="cxd-keeper-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            # gunicorn's arbiter reaps every child, ours too: poll() then reads 0
            if self.proc is not None and self.proc.poll() is not None:
                log.error("the ingest keeper exited (code %s); restarting it", self.proc.returncode)
                if self._stop.wait(self.restart_delay):
                    return
                self.proc = self._spawn()

    def stop(self, grace: float = 10.0) -> None:
        """Stop the keeper (SIGTERM, then SIGKILL after ``grace`` seconds)."""
        self._stop.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_keeper(parent: int | None = None) -> None:
    """``cxd-ingest keeper [PARENT_PID]``: only the keeper, until SIGTERM or SIGINT, or until
    process ``parent`` is gone (the stores' URLs come from the environment it set)."""
    settings = load_settings()
    logs.setup(settings.log_level, "cxd-ingest keeper")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = parent or os.getppid()  # passed in: the parent may die while we import
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # kill -USR1: every thread's stack on stderr

    def orphaned() -> None:  # cxd-ingest was killed (-9): do not run on without it
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("cxd-ingest is gone; the keeper stops")
                stop.set()

    threading.Thread(target=orphaned, name="cxd-keeper-parent", daemon=True).start()
    keeper(settings, stop)


def main() -> None:
    """Entry point of ``cxd-ingest``: the webhook receiver (``CXD_INGEST_WORKERS``
    processes under gunicorn) and the keeper in a process of its own; ``cxd-ingest
    keeper`` runs only the keeper."""
    if sys.argv[1:2] == ["keeper"]:
        run_keeper(int(sys.argv[2]) if len(sys.argv) > 2 else None)
        return
    try:
        settings = load_settings()
        logs.setup(settings.log_level, "cxd-ingest")
        workers, threads = ingest_workers(), ingest_threads()
        from cxd.bootstrap import prepare, sync_config

        settings = prepare(settings)
        specs = sync_config(settings)
        from cxd.stores import connect_redis
        from speed.durability import startup_check

        startup_check(connect_redis(settings.redis_url))  # loss window; impossible durable mode
    except ConfigError as exc:
        sys.exit(f"cxd-ingest: {exc.message}")
    os.environ["CXD_DATABASE_URL"] = settings.database_url
    os.environ["CXD_REDIS_URL"] = settings.redis_url
    log.info("%d source(s) declared in %s", len(specs), settings.config_file)
    keeper_process = KeeperProcess()

    from cxd.httpserver import serve

    print(
        f"cxd-ingest listening on http://{settings.host}:{settings.ingest_port}/hooks/<dataset>",
        flush=True,
    )
    serve(
        create_ingest_app,
        settings.host,
        settings.ingest_port,
        workers=workers,
        threads=threads,
        inline=True,
        reuse_port=True,  # a listening socket per worker: the kernel spreads connections evenly
        when_ready=lambda _arbiter: keeper_process.start(),
        on_exit=lambda _arbiter: keeper_process.stop(),
    )


if __name__ == "__main__":
    main()
