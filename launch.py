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
                        help="require this login; with --share and no --auth one is generated and printed")
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
    parser.add_argument("--io-workers", type=int, default=2,
                        help="model downloads and other io jobs run at once, on threads of their own (default 2)")
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
    if args.mcp and (args.auth or args.share):
        # Gradio 6.31's MCP server lists the tools without the login but runs each call through a
        # client of its own that has no credentials: behind a login every call fails.
        parser.error("--mcp cannot be combined with --auth or --share (which always has a login): "
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
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            sys.exit("--auth must be USER:PASS")
        return user, password
    if args.share:
        # A public link is never open to whoever finds it.
        user, password = "wimmel", secrets.token_urlsafe(12)
        print(f"Public link login: user {user!r}, password {password!r}", flush=True)
        return user, password
    return None


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
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request drowns the log
    started = time.perf_counter()
    from engine import doctor as doc
    from tabs import capabilities
    from tabs.catalog import EngineOptions, build_engine, doctor_checks
    from app import build_app
    from ui import safety

    engine = build_engine(EngineOptions(data_dir=args.data_dir, budget=args.budget, device=args.device,
                                        job_workers=args.job_workers, io_workers=args.io_workers,
                                        chunk_frames=args.chunk_frames))
    engine.history.start()
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
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, auth=login(args),
                max_file_size=args.max_file_size, show_error=True,
                allowed_paths=[str(engine.jobs.root / "jobs")],  # job results, served for download
                mcp_server=args.mcp or None)  # None: Gradio's GRADIO_MCP_SERVER variable decides


if __name__ == "__main__":
    main()
