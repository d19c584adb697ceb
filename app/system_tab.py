"""System tab: devices, resident models, latest runs and memory over time."""
from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from engine import Engine, format_bytes
from engine import doctor as doc
from engine.models import TWO_RUNTIMES
from tabs.catalog import capability_of, doctor_checks
from ui.costs import estimate_request
from ui.handlers import handler
from ui.times import local_time

GiB = 1024**3


def device_rows(status: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "device": d["name"], "total": format_bytes(d["total"]), "used": format_bytes(d["total"] - d["free"]),
        "free": format_bytes(d["free"]), "budget": format_bytes(d["budget"]),
        "models hold": format_bytes(d["engine"]),
    } for d in status["devices"]])


MODEL_COLUMNS = ["model", "function", "networks", "role", "runtime", "why this runtime", "device", "runs on", "state",
                 "bytes", "load s", "uses", "capability", "weights from", "offline"]


def model_rows(status: dict) -> pd.DataFrame:
    """One row per model; 'why this runtime' is said only for a runtime other than torch and
    ONNX Runtime (the two the engine can see into and free)."""
    return pd.DataFrame([{
        "model": m["name"], "function": m.get("function", ""), "networks": m.get("networks", 1),
        "role": m["role"], "runtime": m.get("runtime", ""),
        "why this runtime": "" if m.get("runtime") in TWO_RUNTIMES else m.get("runtime_reason", ""),
        "device": m["device"], "runs on": m.get("backend", ""), "state": m["state"],
        "bytes": format_bytes(m["bytes"]) + ("" if m["measured"] else " (estimate)"),
        "load s": m["load_s"], "uses": m["uses"], "capability": m.get("capability", ""),
        "weights from": m.get("source", ""),
        "offline": {True: "yes, installed", False: "hub / your files"}.get(m.get("offline"), ""),
    } for m in status["models"]], columns=MODEL_COLUMNS)


def run_rows(status: dict) -> pd.DataFrame:
    columns = ["id", "time", "capability", "models", "device", "tier", "wait s", "load s", "compute s", "wall s",
               "work s (expected)", "run peak (predicted)", "peak device", "peak RSS", "evict / retry / OOM",
               "warnings", "status"]
    return pd.DataFrame([{
        "id": r["id"], "time": local_time(r["started"]), "capability": r["capability"],
        "models": ", ".join(r["models"]), "device": r["device"], "tier": r.get("tier") or "",
        "wait s": round(r["queue_wait_s"], 3),
        "load s": round(r["load_s"], 3), "compute s": round(r["compute_s"], 3), "wall s": round(r["wall_s"], 3),
        # What it took against what was predicted before it: time less loading and waiting, and
        # the largest run peak above a model (engine/costs.py, engine/timings.py).
        "work s (expected)": _against(round(max(r["wall_s"] - r["load_s"] - r["queue_wait_s"], 0), 3),
                                      r.get("seconds_predicted") and round(r["seconds_predicted"], 3)),
        "run peak (predicted)": _against(format_bytes(r.get("run_bytes_measured")),
                                         r.get("run_bytes_predicted") is not None
                                         and format_bytes(r["run_bytes_predicted"])),
        "peak device": format_bytes(r["peak_device_bytes"]), "peak RSS": format_bytes(r["peak_rss_bytes"]),
        "evict / retry / OOM": f"{len(r['evictions'])} / {r['retries']} / {r['ooms']}",
        "warnings": len(r["warnings"]), "status": r["status"] if not r["error"] else f"error: {r['error']}",
    } for r in status["runs"]], columns=columns)


def _against(measured, predicted) -> str:
    return f"{measured} ({predicted})" if predicted not in (None, False) else str(measured)


WORKER_COLUMNS = ["worker", "node", "device", "models resident", "memory used / budget", "job", "restarts", "alive"]


def worker_rows(status: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "worker": w["id"], "node": f"{w.get('node', '')} ({w.get('ip', '')})", "device": w.get("device", ""),
        "models resident": ", ".join(w.get("models") or []),
        "memory used / budget": ", ".join(f"{d}: {format_bytes(m.get('used'))} / {format_bytes(m.get('budget'))}"
                                          for d, m in (w.get("memory") or {}).items()),
        "job": w.get("job") or "", "restarts": w.get("restarts", 0), "alive": "yes" if w.get("alive") else "no",
    } for w in status.get("workers", [])], columns=WORKER_COLUMNS)


def tier_table(status: dict) -> pd.DataFrame:
    return pd.DataFrame(status.get("tiers", []), columns=["model", "device", "tier", "why"])


def warning_rows(status: dict) -> pd.DataFrame:
    columns = ["count", "category", "message", "from", "where", "last seen"]
    return pd.DataFrame([{
        "count": w["count"], "category": w["category"], "message": w["message"][:300],
        "from": "Wimmel (a bug to fix)" if w["source"] == "wimmel" else w["source"],
        "where": w["location"], "last seen": local_time(w["last_seen"]),
    } for w in status.get("warnings", [])], columns=columns)


def memory_frame(engine: Engine) -> pd.DataFrame:
    samples = list(engine.history.samples)
    now = samples[-1]["time"] if samples else 0
    return pd.DataFrame({
        "seconds ago": [round(s["time"] - now, 1) for s in samples],
        "device": [s["device"] for s in samples],
        "used GiB": [s["used"] / GiB for s in samples],
    })


def doctor_rows(report: dict) -> pd.DataFrame:
    order = {"error": 0, "warn": 1, "ok": 2}   # problems first
    checks = sorted(report.get("checks", []), key=lambda c: order.get(c["status"], 3))
    return pd.DataFrame([{"status": c["status"], "check": c["name"], "found": c["found"], "fix": c["fix"]}
                         for c in checks], columns=["status", "check", "found", "fix"])


def run_detail(status: dict, run_id) -> str:
    for record in status.get("runs", []):
        if str(record["id"]) == str(run_id):
            profile = record.get("profile")
            shown = {k: round(v, 4) if isinstance(v, float) else v
                     for k, v in record.items() if k != "profile"}
            text = json.dumps(shown, indent=1)
            return text + ("\n\ntorch.profiler:\n" + profile if profile else "")
    return "Pick a run."


# ---------------------------------------------------------------------------------- handlers

def system_status(engine: Engine) -> dict:
    """Devices with total / free / budget; every model with its function, networks, capability,
    runtime, device, weights source (and licence), whether it is offline (its weights installed
    with the app) or from the hub / your files (added in the Models tab), bytes (measured once
    loaded) and load time, state; the count of networks; the latest runs; with --cluster, the
    workers (id, node, ip, device, pid, resident models, memory per device, job, restarts, alive)."""
    status = engine.status()
    cluster = engine.services.get("cluster")   # launch.py --cluster: the Ray workers that run long jobs
    status["workers"] = cluster.workers() if cluster is not None else []
    shipped = capability_of()
    for row in status["models"]:
        row["capability"] = shipped.get(row["name"], "Models tab")
        row["offline"] = row["name"] in shipped
    return status


def doctor(engine: Engine) -> dict:
    """Check torch / CUDA / torchvision / torchaudio / xformers / onnxruntime / OpenCV versions,
    the ONNX Runtime providers that really load, ffmpeg, espeak-ng, disk space and every model's weights.

    Returns:
        JSON {"checks": [{"name", "status": "ok" | "warn" | "error", "found", "fix"}]}.
    """
    return doc.report(doc.run_checks(engine.data_dir, doctor_checks()))


def render(engine: Engine, status: dict):
    """Every table and the plot from one system_status answer."""
    ids = [str(r["id"]) for r in status["runs"]]
    models = gr.update(value=model_rows(status), label=f"Models: {status.get('networks', 0)} networks in "
                                                       f"{len(status['models'])} rows")
    workers = gr.update(value=worker_rows(status), visible=bool(status.get("workers")))
    return (device_rows(status), models, run_rows(status), memory_frame(engine),
            gr.update(choices=ids), warning_rows(status), tier_table(status), workers)


def profile_next(engine: Engine) -> str:
    engine.profile_next_run()
    return "The next run will be profiled with torch.profiler; pick it below to read the table."


def public_endpoints(demo: gr.Blocks) -> list[str]:
    """The API names of the app's public endpoints wired so far (the capability tabs come first)."""
    return sorted({fn.api_name for fn in demo.fns.values()
                   if isinstance(fn.api_name, str) and fn.api_visibility == "public"})


# ---------------------------------------------------------------------------------- layout

def build(engine: Engine, demo: gr.Blocks) -> None:
    status_of = handler(engine, system_status, "read the system status")
    shown = handler(engine, render, "show the system status")
    gr.Markdown("Memory on every device (all processes counted), the models the engine holds, "
                "and what each run cost. Refreshes every 2 seconds.")
    devices = gr.Dataframe(label="Devices", interactive=False)
    workers = gr.Dataframe(label="Cluster workers (long jobs run on them; launch.py --cluster)", interactive=False,
                           wrap=True, visible=False)
    models = gr.Dataframe(label="Models", interactive=False, wrap=True)
    memory = gr.LinePlot(x="seconds ago", y="used GiB", color="device",
                         label="Memory used over time (whole device, every process)", height=260)
    runs = gr.Dataframe(label="Latest runs", interactive=False, wrap=True)
    with gr.Row():
        pick = gr.Dropdown(label="Run details", choices=[], scale=2)
        profile = gr.Button("Profile the next run", scale=1)
    profile_note = gr.Markdown()
    detail = gr.Code(value="Pick a run above to read its whole record.", label="Run record",
                     language="json", lines=8)
    with gr.Accordion("Raw status (the system_status API)", open=False):
        status = gr.JSON(label="system_status")
        refresh = gr.Button("Refresh")

    with gr.Accordion("Memory tiers of the generative pipelines (what stays on the device, and why)", open=False):
        tiers = gr.Dataframe(label="Tiers", interactive=False, wrap=True)
    with gr.Accordion("Warnings raised during runs (each distinct one, counted)", open=False):
        warned = gr.Dataframe(label="Warnings", interactive=False, wrap=True)
    with gr.Accordion("Cost of a request before it runs (the estimate API)", open=False):
        gr.Markdown("What a request to any endpoint would need with this input: memory on its device, the "
                    "time it should take, models that load first and idle ones unloaded for room. Each tab "
                    "shows the same under its button.")
        with gr.Row():
            endpoint = gr.Dropdown(public_endpoints(demo), value=None, label="Endpoint", allow_custom_value=True)
            sample = gr.File(label="Input file (picture, audio or video)", type="filepath")
            sample_text = gr.Textbox(label="Or its text", lines=2)
        weigh = gr.Button("Estimate")
        weighed = gr.JSON(label="estimate (JSON)")
    engine.services["endpoints"] = public_endpoints(demo)
    weigh.click(handler(engine, estimate_request, "estimate the request"), [endpoint, sample, sample_text],
                weighed, api_name="estimate", concurrency_limit=4)
    with gr.Accordion("Doctor: versions, providers, tools and weights", open=False):
        gr.Markdown("What is installed, whether it fits together, and the command that fixes each problem. "
                    "The same report as `python launch.py doctor`.")
        examine = gr.Button("Run the doctor")
        findings = gr.Dataframe(label="Findings", interactive=False, wrap=True)
        report = gr.JSON(label="doctor (JSON)")
    examine.click(handler(engine, doctor, "run the doctor"), None, report, api_name="doctor",
                  concurrency_limit=1).then(
        doctor_rows, report, findings, api_visibility="private", show_progress="hidden")

    outputs = [devices, models, runs, memory, pick, warned, tiers, workers]
    refresh.click(status_of, None, status, api_name="system_status", concurrency_limit=4).then(
        shown, status, outputs, api_visibility="private", show_progress="hidden")
    timer = gr.Timer(2.0)
    gr.on([timer.tick, demo.load], status_of, None, status, api_visibility="private",
          show_progress="hidden", concurrency_limit=4).then(shown, status, outputs, api_visibility="private",
                                                            show_progress="hidden")
    pick.change(run_detail, [status, pick], detail, api_visibility="private")
    profile.click(handler(engine, profile_next, "profile the next run"), None, profile_note,
                  api_visibility="private")
