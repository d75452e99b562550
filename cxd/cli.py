"""The ``cxd`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cxd import logs
from cxd.config import Settings, load_settings
from cxd.errors import CxdError


def _prepared() -> Settings:
    from cxd.bootstrap import prepare

    return prepare(load_settings())


def _stores(settings: Settings | None = None):
    from cxd.stores import open_stores

    return open_stores(settings or _prepared(), application_name="cxd-cli")


def _print_json(value: Any) -> None:
    from cxd.web import to_json_value

    print(json.dumps(value, indent=2, default=to_json_value))


def cmd_init(args) -> int:
    from cxd.bootstrap import prepare, sync_config
    from cxd.migrations import applied
    from cxd.stores import Database

    settings = prepare(load_settings())
    specs = sync_config(settings)
    db = Database(settings.database_url, maxconn=1)
    versions = applied(db)
    db.close()
    print(f"metadata schema at {versions[-1] if versions else 'none'} ({len(versions)} migrations)")
    print(f"{len(specs)} source(s) from {settings.config_file}")
    return 0


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["CXD_DATABASE_URL"] = settings.database_url
    env["CXD_REDIS_URL"] = settings.redis_url
    env["CXD_HOME"] = str(settings.home)
    env["CXD_CONFIG"] = str(settings.config_file)
    return env


def cmd_up(
    args, extra: list[tuple[str, str]] | None = None, settings: Settings | None = None
) -> int:
    from cxd.bootstrap import prepare, sync_config
    from cxd.supervisor import default_procfile, run

    settings = settings or load_settings()
    settings = prepare(settings)
    sync_config(settings)
    print(
        f"cxd up: stores ready (home {settings.home}); starting web, ingest, worker, scheduler",
        flush=True,
    )
    return run(
        default_procfile() + (extra or []), _child_env(settings), pidfile=settings.home / "up.pid"
    )


def cmd_down(args) -> int:
    import signal
    import time

    from cxd import embedded

    settings = load_settings()
    pidfile = settings.home / "up.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip() or 0)
        if pid and embedded._pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while embedded._pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            print(f"stopped cxd up (pid {pid})")
    pg = embedded.stop_postgres(settings.home)
    rd = embedded.stop_redis(settings.home)
    print(
        f"embedded Postgres {'stopped' if pg else 'was not running'}; embedded Redis {'stopped' if rd else 'was not running'}"
    )
    return 0


def cmd_demo(args) -> int:
    from cxd.demo import prepare_demo

    settings = prepare_demo(load_settings())
    if args.reset_only:
        return 0
    return cmd_up(args, extra=[("demo", "cxd demo-feed")], settings=settings)


def cmd_demo_feed(args) -> int:
    from cxd.demo import feed

    return feed(load_settings())


def cmd_status(args) -> int:
    from batch.load import get_watermark
    from batch.runs import list_runs
    from cxd.catalog import list_sources
    from speed.stream import backlog

    stores = _stores()
    rows = []
    for spec in list_sources(stores.db):
        last = list_runs(stores.db, spec.name, limit=1)
        wm = get_watermark(stores.db, spec.name)
        rows.append(
            {
                "dataset": spec.name,
                "type": spec.type,
                "kind": spec.kind,
                "last_run": f"#{last[0]['id']} {last[0]['status']}" if last else "-",
                "loaded": last[0]["rows_loaded"] if last else 0,
                "quarantined": last[0]["rows_quarantined"] if last else 0,
                "watermark": wm.get("stream_id"),
                "refreshed": str(wm.get("refreshed_at") or "-")[:19],
                "backlog": backlog(stores.redis, spec.name),
            }
        )
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no sources declared (add them to cxd.yml or POST /api/sources)")
        return 0
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(str(r[h])) for r in rows)) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers))
    for r in rows:
        print("  ".join(str(r[h]).ljust(widths[h]) for h in headers))
    return 0


def cmd_token(args) -> int:
    from cxd.auth import create_token

    stores = _stores()
    token = create_token(stores.db, args.role, args.name)
    print(f"created a {args.role} token; it is shown only once:", file=sys.stderr)
    print(token)
    return 0


def _progress():
    """A callback printing a load's progress to stderr at most once a second."""
    import time

    last = [0.0]

    def show(result) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            print(
                f"  ... {result.received:,} rows read, {result.staged:,} staged,"
                f" {result.quarantined:,} quarantined",
                file=sys.stderr,
                flush=True,
            )

    return show


def _run_now(stores, dataset: str, mode: str, params: dict | None = None) -> int:
    from batch.jobs import execute_run
    from batch.runs import create_run

    run_id = create_run(stores.db, dataset, mode, params=params)
    print(f"run {run_id} of {dataset} ({mode}) ...", flush=True)
    run = execute_run(stores, run_id, on_progress=_progress())
    if run["status"] != "succeeded":
        print(f"run {run_id} failed at {run['error_step']}: {run['error']}", file=sys.stderr)
        return 1
    print(
        f"run {run_id} succeeded: {run['rows_fetched']} rows fetched, {run['rows_loaded']} loaded,"
        f" {run['rows_quarantined']} quarantined in {(run['duration_ms'] or 0) / 1000:.1f}s"
    )
    return 0


def cmd_run(args) -> int:
    from batch.jobs import enqueue_run

    stores = _stores()
    mode = "full" if args.full else "incremental"
    if args.queue:
        run_id = enqueue_run(stores, args.dataset, mode)
        print(f"queued run {run_id} of {args.dataset} ({mode})")
        return 0
    from cxd.catalog import get_source

    get_source(stores.db, args.dataset)
    return _run_now(stores, args.dataset, mode)


def cmd_reprocess(args) -> int:
    from cxd.catalog import get_source

    stores = _stores()
    get_source(stores.db, args.dataset)
    return _run_now(stores, args.dataset, "reprocess", {"run": args.run})


def cmd_backfill(args) -> int:
    from batch.jobs import _time_range
    from cxd.catalog import get_source

    stores = _stores()
    get_source(stores.db, args.dataset)
    params = {"from": args.start, "to": args.end}
    _time_range(params)  # a readable error before anything is recorded
    return _run_now(stores, args.dataset, "backfill", params)


def cmd_worker(args) -> int:
    from rq import Worker

    from batch.jobs import QUEUE as BATCH
    from speed.loader import QUEUE as SPEED

    settings = _prepared()
    os.environ["CXD_DATABASE_URL"] = settings.database_url
    os.environ["CXD_REDIS_URL"] = settings.redis_url
    stores = _stores(settings)
    from batch.jobs import recover

    recover(stores)  # runs whose worker died (SIGKILL, lost machine) run again
    worker = Worker([BATCH, SPEED, "cxd-default"], connection=stores.redis)
    # with_scheduler: retries with backoff wait in rq's scheduled registry until then
    worker.work(burst=args.burst, with_scheduler=True, logging_level=settings.log_level)
    return 0


def cmd_scheduler(args) -> int:
    from batch.schedule import scheduler

    settings = _prepared()
    os.environ["CXD_DATABASE_URL"] = settings.database_url
    os.environ["CXD_REDIS_URL"] = settings.redis_url
    sch = scheduler(_stores(settings))
    sch._interval = args.interval
    sch.run(burst=args.burst)
    return 0


def cmd_query(args) -> int:
    from query_router import explain, run_query

    stores = _stores()
    values = {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise CxdError(f"--param {item!r}: expected NAME=VALUE", status=400)
        values[name] = value
    if getattr(args, "saved", False):
        from query_router.saved import plan_saved, run_saved

        runner = plan_saved if args.explain else run_saved
        _print_json(runner(stores, args.sql, values))
    elif args.explain:
        _print_json(explain(stores, args.sql, None, values))
    else:
        _print_json(run_query(stores, args.sql, None, values))
    return 0


def cmd_plugins(args) -> int:
    from plugins.registry import discover, load_errors

    found = discover(load_settings().plugin_dir)
    for name, cls in sorted(found.items()):
        print(f"{name:20} {cls.__module__}.{cls.__name__}{'  (resident)' if cls.resident else ''}")
    errors = load_errors()
    for where, why in errors.items():
        print(f"BROKEN {where}: {why}", file=sys.stderr)
    return 1 if (errors and args.check) else 0


def cmd_plugin_new(args) -> int:
    from pathlib import Path

    from plugins.stubs import write_stub

    folder = Path(args.dir) if args.dir else load_settings().plugin_dir
    paths = write_stub(args.name, args.type, folder, force=args.force)
    for path in paths:
        print(f"wrote {path}")
    print(f"next: edit {paths[0]}, then run: pytest {paths[1]}")
    return 0


def cmd_metadata(args) -> int:
    from pathlib import Path

    from cxd import metadata

    stores = _stores()
    path = Path(args.file)
    counts = (
        metadata.dump(stores.db, path)
        if args.metadata_command == "dump"
        else metadata.restore(stores.db, path)
    )
    verb = "wrote" if args.metadata_command == "dump" else "restored"
    print(f"{verb} {path}: " + ", ".join(f"{n} {t}" for t, n in counts.items()))
    return 0


def cmd_speed_load(args) -> int:
    from speed.loader import Loader, load_live, run_forever

    stores = _stores()
    loader = Loader(stores, batch_size=args.batch_size)
    if args.once:
        reports = [loader.load(n) for n in args.dataset] if args.dataset else load_live(stores)
        for r in reports:
            print(
                f"{r.dataset}: loaded {r.loaded}, dead-lettered {r.dead}, watermark {r.watermark}"
            )
        return 0
    print(f"speed loader {loader.consumer}: loading every {args.interval}s", flush=True)
    run_forever(stores, datasets=args.dataset, interval=args.interval, loader=loader)
    return 0


def cmd_speed_replay(args) -> int:
    from speed.replay import rebuild_latest

    n = rebuild_latest(_stores(), args.dataset)
    print(f"rebuilt the latest values of {args.dataset}: {n} entities")
    return 0


def cmd_speed_check(args) -> int:
    from speed.durability import durable_default, inspect

    p = inspect(_stores().redis)
    print(f"redis {'.'.join(map(str, p.version))}: appendonly {p.appendonly}, "
          f"appendfsync {p.appendfsync}, save {p.save!r}")  # fmt: skip
    print(f"a Redis crash can lose: {p.loss_window}")
    problem = p.durable_problem()
    print(f"durable mode: {'possible' if not problem else problem}")
    return 1 if (durable_default() and problem) else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cxd``."""
    p = argparse.ArgumentParser(prog="cxd", description="cxd: Lambda-architecture data engine")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "init", help="create or migrate the metadata schema and load cxd.yml"
    ).set_defaults(fn=cmd_init)
    sub.add_parser(
        "up", help="run web, ingest, worker and scheduler in the foreground"
    ).set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop cxd up and the embedded stores of CXD_HOME").set_defaults(
        fn=cmd_down
    )
    dm = sub.add_parser("demo", help="reset and fill the factory demo, then run everything")
    dm.add_argument(
        "--reset-only", action="store_true", help="reset and fill the demo's sources, then exit"
    )
    dm.set_defaults(fn=cmd_demo)
    sub.add_parser("demo-feed", help=argparse.SUPPRESS).set_defaults(fn=cmd_demo_feed)
    s = sub.add_parser("status", help="datasets, last runs, watermarks and backlogs")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    t = sub.add_parser("token", help="manage API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tc = tsub.add_parser("create", help="create a token (printed as the last line)")
    tc.add_argument("--role", required=True, choices=["read", "ingest", "analyst", "admin"])
    tc.add_argument("--name")
    tc.set_defaults(fn=cmd_token)
    r = sub.add_parser("run", help="run a source now (in this process, or --queue for the workers)")
    r.add_argument("dataset")
    r.add_argument("--full", action="store_true", help="full refresh instead of incremental")
    r.add_argument("--queue", action="store_true", help="enqueue for an rq worker instead")
    r.set_defaults(fn=cmd_run)
    rp = sub.add_parser(
        "reprocess", help="re-run ingest from the archive, without touching the source"
    )
    rp.add_argument("dataset")
    rp.add_argument("--run", type=int, help="only the payloads fetched by this run")
    rp.set_defaults(fn=cmd_reprocess)
    bf = sub.add_parser("backfill", help="load a time range again (the cursor does not move)")
    bf.add_argument("dataset")
    bf.add_argument("--from", dest="start", required=True, help="ISO 8601 start (inclusive)")
    bf.add_argument("--to", dest="end", required=True, help="ISO 8601 end (exclusive)")
    bf.set_defaults(fn=cmd_backfill)
    w = sub.add_parser("worker", help="run an rq worker for cxd's queues")
    w.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    w.set_defaults(fn=cmd_worker)
    sc = sub.add_parser("scheduler", help="run the rq-scheduler that enqueues scheduled runs")
    sc.add_argument("--interval", type=float, default=5.0)
    sc.add_argument("--burst", action="store_true")
    sc.set_defaults(fn=cmd_scheduler)
    q = sub.add_parser("query", help="run read-only SQL against datasets")
    q.add_argument("sql")
    q.add_argument("--param", action="append", metavar="NAME=VALUE")
    q.add_argument("--explain", action="store_true", help="show the router's plan instead")
    q.add_argument("--saved", action="store_true", help="SQL is the name of a saved query")
    q.set_defaults(fn=cmd_query)
    pl = sub.add_parser("plugins", help="list the plugins cxd can load")
    pl.add_argument("--check", action="store_true", help="fail if any plugin is broken")
    pl.set_defaults(fn=cmd_plugins)
    pn = sub.add_parser("plugin", help="write plugin stubs")
    pnsub = pn.add_subparsers(dest="plugin_command", required=True)
    pnew = pnsub.add_parser("new", help="write a commented one-class plugin and its test")
    pnew.add_argument("name", help="plugin (and module) name, e.g. water_levels")
    pnew.add_argument(
        "--type", required=True, choices=["odbc", "http", "webhook", "file", "mqtt", "python"]
    )
    pnew.add_argument("--dir", help="plugin folder (default: CXD_PLUGIN_DIR)")
    pnew.add_argument("--force", action="store_true", help="overwrite existing files")
    pnew.set_defaults(fn=cmd_plugin_new)
    md = sub.add_parser("metadata", help="dump or restore sources, saved queries and tokens")
    mdsub = md.add_subparsers(dest="metadata_command", required=True)
    for verb in ("dump", "restore"):
        m = mdsub.add_parser(
            verb, help=f"{verb} the metadata (a JSON file holding secrets: keep it private)"
        )
        m.add_argument("file")
        m.set_defaults(fn=cmd_metadata)
    sp = sub.add_parser("speed", help="the speed layer: loader, replay, durability check")
    spsub = sp.add_subparsers(dest="speed_command", required=True)
    sl = spsub.add_parser("load", help="load live events into raw (continuously, or --once)")
    sl.add_argument("dataset", nargs="*", help="datasets (default: every live source)")
    sl.add_argument("--once", action="store_true", help="one round, then exit")
    sl.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    sl.add_argument("--batch-size", type=int, default=10_000)
    sl.set_defaults(fn=cmd_speed_load)
    sr = spsub.add_parser("replay", help="rebuild a dataset's latest values from raw")
    sr.add_argument("dataset")
    sr.set_defaults(fn=cmd_speed_replay)
    spsub.add_parser(
        "check", help="Redis persistence: what a crash can lose, whether durable mode works"
    ).set_defaults(fn=cmd_speed_check)
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``cxd``: one clear line for every expected error, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        logs.setup(load_settings().log_level, "cxd")
        code = args.fn(args)
    except CxdError as exc:
        print(f"cxd {args.command}: {exc.message}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
