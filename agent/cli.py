"""The ``vcs-edge`` command."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import signal
import sys
from collections.abc import Sequence

from agent import __version__
from agent.ops import logs
from agent.ops.memory import cap_malloc_arenas

from . import config as cfgmod


def _load(path: str, summary: bool = False) -> cfgmod.SiteFile | None:
    """The site file, or None after printing one line per problem to stderr."""
    try:
        return cfgmod.load(path)
    except cfgmod.ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        if summary:
            print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return None


def _config_check(args: argparse.Namespace) -> int:
    site = _load(args.config, summary=True)
    if site is None:
        return 1
    from agent.box.registry import devices_from_site

    try:
        devices = devices_from_site(site)
    except ValueError as exc:  # the loader's checks should leave nothing here; never a traceback if they do
        from pipelines.urls import strip_userinfo

        print(f"{args.config}: the devices cannot be set up: {strip_userinfo(str(exc))}", file=sys.stderr)
        return 1
    cams = sum(1 for d in devices if d.stream is not None)
    print(
        f"{args.config}: OK ({len(devices)} devices, {cams} pulled cameras, {len(site.instances)} instances)"
    )
    if site.allow_removal:
        print(
            f"{args.config}: note: allow_removal: [{', '.join(site.allow_removal)}] lets a reload remove "
            "these; take it out once the reload is done"
        )
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(cfgmod.json_schema(), indent=2, ensure_ascii=False))
    return 0


def _run(args: argparse.Namespace) -> int:
    from agent.box.supervisor import run_site

    site = _load(args.config)
    if site is None:
        return 1
    logs.setup(args.log_level or site.agent.log.level, args.log_format or site.agent.log.format)
    cap_malloc_arenas()  # before any pull or detector thread (agent.ops.memory)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack to stderr
    return asyncio.run(run_site(site, args.config))


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    logs.setup(args.log_level or "warning", "text")
    cap_malloc_arenas()
    return asyncio.run(run_demo(duration=args.duration, as_json=args.json, data_dir=args.data_dir))


def _models_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from agent.analytics.pipeline import custom_spec
    from pipelines.detect.registry import model_rows

    extra = []
    provider = args.provider
    if args.config:
        site = _load(args.config)
        if site is None:
            return 1
        provider = args.provider or site.detection.provider
        extra = [custom_spec(m).spec() for m in site.detection.custom_models]
    rows = [{k: str(v) for k, v in asdict(r).items()} for r in model_rows(extra, provider=provider or "auto")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Ask the running agent of a site file to reload it (over its loopback HTTP listener)."""
    import urllib.error
    import urllib.request

    site = _load(args.config)
    if site is None:
        return 1
    host = site.agent.http.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    url = f"http://{host}:{site.agent.http.port}/-/reload" + ("?force=1" if args.force else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as resp:
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    except OSError as exc:
        print(f"vcs-edge reload: no agent answers on {url}: {exc}", file=sys.stderr)
        return 1
    if body.get("ok"):
        print("reloaded")
        return 0
    for line in body.get("problems", []):
        print(f"reload refused: {line}", file=sys.stderr)
    return 1


def _user(args: argparse.Namespace) -> int:
    """``vcs-edge user hash|add|remove|list``: console users (``data_dir/console.db``; the agent may run)."""
    import getpass
    import re
    from pathlib import Path

    from agent.console.auth import UserDb, hash_password

    def password() -> str:
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n")
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise SystemExit("vcs-edge user: the passwords differ")
        return first

    if args.user_command == "hash":
        print(hash_password(password()))
        return 0
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        site = _load(args.config)
        if site is None:
            return 1
        data_dir = Path(site.agent.data_dir)
    db = UserDb(data_dir)
    try:
        if args.user_command == "list":
            for name in db.names():
                print(name)
            return 0
        if not re.fullmatch(r"[A-Za-z0-9._@\-]{1,64}", args.name):
            print(
                f"vcs-edge user: {args.name!r}: a user name is letters, digits, '.', '_', '@', '-'",
                file=sys.stderr,
            )
            return 1
        if args.user_command == "remove":
            if not db.remove(args.name):
                print(f"vcs-edge user: no user {args.name!r} in {db.path}", file=sys.stderr)
                return 1
            return 0
        pw = password()
        if len(pw) < 8:
            print("vcs-edge user: a console password needs at least 8 characters", file=sys.stderr)
            return 1
        db.set(args.name, hash_password(pw))
        print(f"user {args.name} saved in {db.path}")
        return 0
    finally:
        db.close()


def _outbox(args: argparse.Namespace) -> int:
    """``vcs-edge outbox list|purge``: works on the data dir of a stopped agent; refuses under a running one."""
    from pathlib import Path

    from agent.storage.outbox import Outbox
    from agent.storage.store import DB_FILE, DataDirLock, DataDirLocked

    configured: set[str] = set()
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        site = _load(args.config)
        if site is None:
            return 1
        data_dir = Path(site.agent.data_dir)
        if site.mqtt is not None and site.mqtt.enabled:
            configured.add("mqtt")
    db = data_dir / DB_FILE
    if not db.is_file():
        print(f"{db}: no target store here (nothing to list or purge)", file=sys.stderr)
        return 1
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except DataDirLocked as exc:
        print(f"vcs-edge outbox: {exc}", file=sys.stderr)
        return 2
    try:
        box = Outbox(db, (), announce=False)
        try:
            pending = box.pending_by_sink()
            if args.outbox_command == "list":
                if not pending:
                    print("outbox is empty")
                for sink, n in sorted(pending.items()):
                    state = ""
                    if args.config:
                        state = (
                            " configured" if sink in configured else " NOT CONFIGURED (waits for its section)"
                        )
                    print(f"{sink}: {n} undelivered, oldest {box.oldest_age_s(sink):.0f} s{state}")
                return 0
            if args.sink not in pending:
                print(f"vcs-edge outbox: sink {args.sink!r} has no undelivered entries", file=sys.stderr)
                return 1
            n = box.purge(args.sink)
            print(f"purged {n} undelivered entries of sink {args.sink!r}")
            return 0
        finally:
            box.close()
    finally:
        lock.release()


def _detect(args: argparse.Namespace) -> int:
    from .detect_cli import run

    cfg = cfgmod.DetectionConfig()
    if args.config:
        site = _load(args.config)
        if site is None:
            return 1
        cfg = site.detection
    return run(args, cfg)


def _ctl(argv: Sequence[str]) -> int:
    from .api.ctl import main as ctl_main

    return int(ctl_main(list(argv)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vcs-edge", description="Edge video-analytics agent (GB/T 28181, VCS API)."
    )
    p.add_argument("--version", action="version", version=f"vcs-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent on a site file")
    run.add_argument("-c", "--config", required=True, help="site YAML file")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["json", "text"])
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="run the agent on sample footage with an embedded RTSP server")
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)"
    )
    demo.add_argument("--json", action="store_true", help="print one JSON summary as the last line of stdout")
    demo.add_argument(
        "--data-dir", default=None, help="where the demo keeps its store (default: a cache folder)"
    )
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=_demo)

    conf = sub.add_parser("config", help="check a site file or print its JSON Schema")
    csub = conf.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser("check", help="validate a site file; exit 0 when usable, 1 otherwise")
    check.add_argument("-c", "--config", required=True)
    check.set_defaults(func=_config_check)
    schema = csub.add_parser("schema", help="print the JSON Schema of the site file")
    schema.set_defaults(func=_config_schema)

    rel = sub.add_parser("reload", help="make the running agent re-read its site file (like SIGHUP)")
    rel.add_argument("-c", "--config", required=True, help="the site file the agent runs")
    rel.add_argument(
        "--force", action="store_true", help="apply even if it removes a sink, every camera or every instance"
    )
    rel.set_defaults(func=_reload)

    models = sub.add_parser("models", help="bundled and configured detection models")
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="id, file, licence, input size and execution provider of each model")
    mlist.add_argument(
        "--provider", default=None, help="auto, cpu, cuda, tensorrt, openvino (default: the site's)"
    )
    mlist.add_argument("-c", "--config", help="also list the site file's own models")
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(func=_models_list)
    outbox = sub.add_parser("outbox", help="undelivered targets per sink (agent stopped)")
    osub = outbox.add_subparsers(dest="outbox_command", required=True)
    for name, text in (
        ("list", "undelivered entries per sink, configured or not"),
        ("purge", "drop every undelivered entry of one sink (the only way besides outbox_max_entries)"),
    ):
        op = osub.add_parser(name, help=text)
        if name == "purge":
            op.add_argument("sink", help="sink name, as `outbox list` shows it (e.g. mqtt)")
        where = op.add_mutually_exclusive_group(required=True)
        where.add_argument("-c", "--config", help="site YAML file (its agent.data_dir)")
        where.add_argument("--data-dir", help="the agent's data directory")
        op.set_defaults(func=_outbox)
    user = sub.add_parser("user", help="console users: hash a password, add, remove or list users")
    usub = user.add_subparsers(dest="user_command", required=True)
    for name, text in (
        ("hash", "print a password hash for console.users[].password_hash"),
        ("add", "add a user (or set its password) in data_dir/console.db"),
        ("remove", "remove a user from data_dir/console.db"),
        ("list", "users in data_dir/console.db (site-file users are in the file)"),
    ):
        up = usub.add_parser(name, help=text)
        if name in ("add", "remove"):
            up.add_argument("name", help="login name")
        if name in ("hash", "add"):
            up.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if name != "hash":
            where = up.add_mutually_exclusive_group(required=True)
            where.add_argument("-c", "--config", help="site YAML file (its agent.data_dir)")
            where.add_argument("--data-dir", help="the agent's data directory")
        up.set_defaults(func=_user)
    from .detect_cli import add_arguments as detect_arguments

    det = sub.add_parser(
        "detect", help="run the site's (or the bundled) detectors on pictures and video files"
    )
    detect_arguments(det)
    det.set_defaults(func=_detect)
    sub.add_parser(
        "ctl",
        help="sign and send a VCS API call to a box: ctl --endpoint URL --access-key-id ID ACTION Key=Value ...",
        add_help=False,
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        return _ctl(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
