"""Start Wimmel: parse flags, build the engine, build the app, serve."""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent
log = logging.getLogger("wimmel")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="launch.py", description="Wimmel: many neural networks side by side.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also serve on a public gradio.live link; always behind a login")
    parser.add_argument("--auth", metavar="USER:PASS",
                        help="require this login (its user is the admin); with --share and no --auth or "
                             "--auth-file one is generated and printed")
    parser.add_argument("--auth-file", metavar="PATH",
                        help="several logins: one user:hash a line (python launch.py hash-password prints "
                             "them), # comments, and an 'admins: user1, user2' line; each user sees "
                             "only their own jobs, admins see and manage all")
    parser.add_argument("--admins", metavar="USER,...", default="",
                        help="with --auth-file: these users are admins too (besides the file's admins line)")
    parser.add_argument("--budget", metavar="DEV=SIZE,...",
                        help="most memory the engine may hold per device, e.g. cpu=6GiB,cuda:0=10GiB "
                             "(default: each device's total, less what other processes use)")
    parser.add_argument("--data-dir", default=os.environ.get("WIMMEL_DATA_DIR", str(ROOT / "data")),
                        help="where footprints, run records and jobs are kept (default ./data)")
    parser.add_argument("--device", default="auto",
                        help="where models go: auto (each on the GPU with the most room for it; the CPU "
                             "without one), cpu, or cuda:N (pins every model there)")
    parser.add_argument("--max-file-size", default="200MB", help="largest upload accepted (default 200MB)")
    parser.add_argument("--nsfw-gate", choices=["auto", "on", "off"], default="auto",
                        help="blur image outputs that score high on the NSFW check (auto: on when --share)")
    parser.add_argument("--nsfw-threshold", type=float, default=0.8,
                        help="NSFW score from which the gate blurs an output (default 0.8)")
    parser.add_argument("--job-workers", type=int, default=1,
                        help="compute jobs (video, audio) run at once (default 1; each model also has its own limit)")
    parser.add_argument("--job-nice", type=int, default=10, metavar="N",
                        help="job threads run N nice steps below interactive calls, so clicks are answered "
                             "first when both want the cores (default 10; 0: the same priority)")
    parser.add_argument("--io-workers", type=int, default=2,
                        help="model downloads and other io jobs run at once, on threads of their own (default 2)")
    parser.add_argument("--max-jobs-per-user", type=int, metavar="N",
                        help="queued and running jobs one login (or browser session) may have (default: no limit)")
    parser.add_argument("--max-upload-per-user", metavar="SIZE",
                        help="bytes of input files one login's queued jobs may hold, e.g. 2GiB (default: no limit)")
    parser.add_argument("--chunk-frames", type=int, default=32,
                        help="video frames per chunk: a killed job resumes from its last chunk (default 32)")
    parser.add_argument("--cluster", metavar="local|auto|HOST:PORT",
                        help="run long jobs on Ray worker actors: 'local' starts Ray on this machine, 'auto' "
                             "or an address joins a cluster (docs/cluster.md); without it all runs here")
    parser.add_argument("--cluster-workers", type=int, default=2,
                        help="CPU workers with --cluster (default 2), besides one per GPU")
    parser.add_argument("--mcp", action="store_true",
                        help="also serve every API endpoint as an MCP tool (its docstring the tool's "
                             "description) at /gradio_api/mcp/ (streamable HTTP; legacy SSE at "
                             "/gradio_api/mcp/sse); needs gradio[mcp]; not with a login")
    args = parser.parse_args(argv)
    if args.auth and args.auth_file:
        parser.error("--auth and --auth-file exclude each other: put every login in the file")
    if args.admins and not args.auth_file:
        parser.error("--admins needs --auth-file (with --auth its one user is the admin)")
    if not 0 <= args.job_nice <= 19:
        parser.error("--job-nice is 0 to 19 (a process may lower its own threads' priority, never raise it)")
    if args.mcp and (args.auth or args.auth_file or args.share):
        # Gradio 6.31's MCP server lists the tools without the login but runs each call through a
        # client of its own that has no credentials: behind a login every call fails.
        parser.error("--mcp cannot be combined with --auth, --auth-file or --share (which always has a login): "
                     "Gradio's MCP server cannot call the app's endpoints behind a login")
    return args


def attach_cluster(engine, args: argparse.Namespace) -> None:
    """With --cluster: worker actors (each its own engine, built as the app builds one) run the long
    jobs; the head keeps the app, the job queue and the data dir (docs/cluster.md)."""
    import atexit

    from engine.cluster import Cluster

    cluster = Cluster.start(args.cluster, cpu_workers=args.cluster_workers,
                            engine_factory="tabs.catalog:worker_engine",
                            engine_kwargs={"budget": args.budget, "chunk_frames": args.chunk_frames},
                            data_dir=Path(args.data_dir) / "cluster")
    engine.jobs.attach(cluster)
    engine.services["cluster"] = cluster
    atexit.register(cluster.shutdown)
    log.info("cluster %s: workers %s", args.cluster, [w["id"] for w in cluster.workers()])


def login(args: argparse.Namespace) -> tuple[str, str] | None:
    """The one login of --auth, or --share's generated one; None otherwise."""
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            sys.exit("--auth must be USER:PASS")
        return user, password
    if args.share and not args.auth_file:
        # A public link is never open to whoever finds it.
        user, password = "wimmel", secrets.token_urlsafe(12)
        print(f"Public link login: user {user!r}, password {password!r}", flush=True)
        return user, password
    return None


def logins(args: argparse.Namespace):
    """The logins (ui.users.Logins) for these flags, or None for an app without a login: the
    --auth-file's users, or login()'s one user, who is then the admin."""
    from ui.users import AuthFileError, Logins

    if args.auth_file:
        admins = tuple(name.strip() for name in args.admins.split(",") if name.strip())
        try:
            return Logins.from_file(args.auth_file, admins)
        except AuthFileError as exc:
            sys.exit(f"--auth-file: {exc}")
    single = login(args)
    return Logins.single(*single) if single else None


def auth_check(allowed):
    """Gradio's auth callable for these logins. A coroutine: scrypt takes about 0.25 s on a small CPU,
    which would hold up every other request if it ran on the server's event loop."""
    import asyncio

    async def check(user: str, password: str) -> bool:
        return await asyncio.to_thread(allowed.check, user, password)

    return check


def hash_password(argv) -> int:
    """`python launch.py hash-password [USER] [--stdin]`: print a `user:hash` line for --auth-file."""
    import getpass

    from ui.users import check_user_name, hash_password as scrypt_hash

    parser = argparse.ArgumentParser(prog="launch.py hash-password",
                                     description="Print a user:hash line to append to an --auth-file.")
    parser.add_argument("user", nargs="?", help="the login name (asked for when left out)")
    parser.add_argument("--stdin", action="store_true",
                        help="read the password from the first line of stdin (for scripts), not the terminal")
    args = parser.parse_args(argv)
    try:
        user = check_user_name(args.user if args.user is not None else input("User: ").strip())
        if args.stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password again: ") != password:
                sys.exit("The passwords differ; nothing printed.")
        print(f"{user}:{scrypt_hash(password)}")
    except ValueError as exc:
        sys.exit(f"hash-password: {exc}")
    return 0


def doctor(argv) -> int:
    """`python launch.py doctor [--json] [--data-dir DIR]`: the report, exit 0 (no errors) or 1."""
    parser = argparse.ArgumentParser(prog="launch.py doctor",
                                     description="Check versions, providers, tools and weights; print fixes.")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--data-dir", default=os.environ.get("WIMMEL_DATA_DIR", str(ROOT / "data")))
    args = parser.parse_args(argv)
    import json

    from engine import doctor as doc
    from tabs.catalog import doctor_checks

    checks = doc.run_checks(args.data_dir, doctor_checks())
    print(json.dumps(doc.report(checks), indent=1) if args.json else doc.format_text(checks))
    return doc.exit_code(checks)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        sys.exit(doctor(argv[1:]))
    if argv[:1] == ["hash-password"]:
        sys.exit(hash_password(argv[1:]))
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request drowns the log
    started = time.perf_counter()
    allowed = logins(args)   # a broken --auth-file stops here, before the engine loads anything
    from engine import parse_size
    try:
        upload_limit = parse_size(args.max_upload_per_user) if args.max_upload_per_user else None
    except ValueError as exc:
        sys.exit(f"--max-upload-per-user: {exc}")
    from engine import doctor as doc
    from tabs import capabilities
    from tabs.catalog import EngineOptions, build_engine, doctor_checks
    from app import EVENTS_AT_ONCE, build_app, job_files
    from ui import safety, users

    engine = build_engine(EngineOptions(data_dir=args.data_dir, budget=args.budget, device=args.device,
                                        job_workers=args.job_workers, io_workers=args.io_workers,
                                        job_nice=args.job_nice,
                                        chunk_frames=args.chunk_frames,
                                        max_queued_per_owner=args.max_jobs_per_user,
                                        max_upload_bytes_per_owner=upload_limit))
    engine.history.start()
    users.configure(allowed)   # before the app serves: who is admin decides what each user sees
    gate = safety.configure(engine, args.nsfw_gate, args.nsfw_threshold, shared=args.share)
    demo = build_app(engine)
    if args.cluster:
        attach_cluster(engine, args)
    engine.jobs.start()  # after every kind is registered: jobs a crash interrupted resume now

    def preload() -> None:
        from tabs.warmup import warm_up

        warm_up()   # a second with setup.sh's numba cache; else the first audio request would pay it
        # Interactive models are resident from the start so the first click answers at once.
        for spec in engine.registry:
            if spec.role == "interactive":
                try:
                    engine.preload(spec.name)
                except Exception as exc:  # the tab says why; the app keeps serving
                    log.warning("could not preload %s: %s", spec.name, exc)

    threading.Thread(target=preload, name="wimmel-preload", daemon=True).start()
    checks = doc.run_checks(engine.data_dir, doctor_checks())
    (log.warning if doc.exit_code(checks) else log.info)(doc.summary(checks))
    for capability in capabilities():
        reason = capability.unavailable()
        if reason:
            log.warning("tab unavailable - %s: %s", capability.TITLE, reason)
    log.info("devices %s (default %s), data in %s, NSFW gate %s, built in %.1f s", engine.devices.names,
             engine.devices.default, engine.data_dir, "on" if gate.enabled else "off",
             time.perf_counter() - started)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                auth=auth_check(allowed) if allowed else None,
                max_file_size=args.max_file_size, show_error=True,
                allowed_paths=[str(engine.jobs.root / "jobs")],  # job results, served for download...
                app_kwargs={"middleware": [job_files.middleware(engine)]},  # ...to their owner only
                mcp_server=args.mcp or None,  # None: Gradio's GRADIO_MCP_SERVER variable decides
                max_threads=EVENTS_AT_ONCE)


if __name__ == "__main__":
    main()
