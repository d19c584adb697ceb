"""The doctor: what is installed, whether the pieces fit together, and the command that fixes each.

Users of playgrounds like this lose days to torch / torchvision / torchaudio / xformers / CUDA /
onnxruntime mismatches. Each check imports as little as it can, catches everything, and ends in
a Check: status ok | warn | error, what was found, and the exact command that fixes it.
Capabilities add their own checks (weights present) through `extra`.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

GiB = 1024**3
PIP = f"{Path(sys.executable).as_posix()} -m pip"

# torch minor -> torchvision minor that was built for it. Source: the compatibility table in the
# README of github.com/pytorch/vision and pytorch.org/get-started/previous-versions
# (torch 2.x pairs with torchvision 0.(x+15): 2.5 -> 0.20, 2.9 -> 0.24, 2.13 -> 0.28).
TORCHVISION_FOR_TORCH = {(2, minor): (0, minor + 15) for minor in range(0, 20)}
TORCHVISION_FOR_TORCH.update({(1, 13): (0, 14), (1, 12): (0, 13), (1, 11): (0, 12)})
# torchaudio before 2.11 is linked against exactly one torch release (same version number);
# from 2.11 it is built on torch's stable ABI and works with that torch and every later one.
# Source: docs.pytorch.org/audio/2.11.0/installation.html, "Compatibility Matrix".
TORCHAUDIO_STABLE_ABI_FROM = (2, 11)
# Only one of each group may be installed: they provide the same module and overwrite each other.
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                        "onnxruntime-qnn", "onnxruntime-training")
OPENCV_PACKAGES = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                   "opencv-contrib-python-headless")


@dataclasses.dataclass
class Check:
    name: str
    status: str          # "ok" | "warn" | "error"
    found: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _minor(version: str) -> tuple[int, int]:
    numbers = re.match(r"(\d+)\.(\d+)", version)
    return (int(numbers[1]), int(numbers[2])) if numbers else (0, 0)


def _pinned(name: str) -> str:
    """The version requirements.txt pins, so a fix reinstalls exactly what the project tested."""
    req = Path(__file__).resolve().parents[1] / "requirements.txt"
    if req.exists():
        for line in req.read_text().splitlines():
            if line.split("==")[0].strip().lower() == name.lower() and "==" in line:
                return line.strip()
    return name


# ---------------------------------------------------------------------------------- checks

def check_python() -> Check:
    version = platform.python_version()
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return Check("python", "ok", f"Python {version} ({sys.executable})")
    return Check("python", "warn", f"Python {version}: the pinned packages are tested on 3.11 "
                 "(rapidocr-onnxruntime needs < 3.13)",
                 "PYTHON=python3.11 ./setup.sh  (after rm -rf .venv)")


def check_torch() -> list[Check]:
    version = _version("torch")
    if version is None:
        return [Check("torch", "error", "torch is not installed", f"{PIP} install {_pinned('torch')}")]
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything
        return [Check("torch", "error", f"torch {version} does not import: {exc}",
                      f"{PIP} install --force-reinstall {_pinned('torch')}")]
    cuda = torch.version.cuda
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    checks = [Check("torch", "ok", f"torch {torch.__version__} ({build})")]
    if not cuda:
        checks.append(Check("cuda", "ok", "no CUDA in this torch build: models run on the CPU",
                            "for a GPU: pip install torch==<version> --index-url "
                            "https://download.pytorch.org/whl/cu128 (pick the CUDA your driver supports)"))
        return checks
    try:
        available = torch.cuda.is_available()
    except Exception as exc:  # noqa: BLE001
        available, error = False, str(exc)
    else:
        error = ""
    driver = _nvidia_driver()
    if not available:
        checks.append(Check("cuda", "warn", f"torch was built for CUDA {cuda} but no GPU is usable"
                            f"{': ' + error if error else ''}; driver: {driver or 'none found'}",
                            "install or update the NVIDIA driver (nvidia-smi must work), or install the "
                            f"CPU build: {PIP} install {_pinned('torch')} --index-url https://download.pytorch.org/whl/cpu"))
        return checks
    names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
    checks.append(Check("cuda", "ok", f"CUDA {cuda}, driver {driver or 'unknown'}: {names}; "
                        f"cuDNN {torch.backends.cudnn.version()}"))
    return checks


def _nvidia_driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def check_torchvision(torch_version: str | None) -> Check:
    version = _version("torchvision")
    if version is None:
        return Check("torchvision", "ok", "not installed (Wimmel does not need it)")
    want = TORCHVISION_FOR_TORCH.get(_minor(torch_version or "0.0"))
    fix_pair = f"{PIP} install torchvision=={want[0]}.{want[1]}.*" if want else f"{PIP} uninstall -y torchvision"
    if want and _minor(version) != want:
        return Check("torchvision", "error",
                     f"torchvision {version} was built for another torch than {torch_version} "
                     f"(this torch needs torchvision {want[0]}.{want[1]}); importing it fails with "
                     "\"operator torchvision::nms does not exist\"", fix_pair)
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if probe.returncode != 0:
        last = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "unknown error"
        return Check("torchvision", "error", f"torchvision {version} does not import: {last}", fix_pair)
    return Check("torchvision", "ok", f"torchvision {version}, matches torch {torch_version}")


def check_torchaudio(torch_version: str | None) -> Check:
    version = _version("torchaudio")
    if version is None:
        return Check("torchaudio", "ok", "not installed (Wimmel decodes audio with ffmpeg)")
    audio, torch_minor = _minor(version), _minor(torch_version or "0.0")
    fits = audio == torch_minor or (audio >= TORCHAUDIO_STABLE_ABI_FROM and torch_minor >= audio)
    if not fits:
        return Check("torchaudio", "error", f"torchaudio {version} does not work with torch {torch_version}: "
                     "before 2.11 each torchaudio is linked against exactly one torch release",
                     f"{PIP} install torchaudio=={torch_minor[0]}.{torch_minor[1]}.* "
                     f"(or {PIP} uninstall -y torchaudio)")
    return Check("torchaudio", "ok", f"torchaudio {version}, works with torch {torch_version}")


def _cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.version.cuda) and torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - check_torch reports a broken torch
        return False


def _xformers_advice(torch_version: str | None) -> dict:
    """install_plan's answer for this torch: {"install": "xformers==V" | None, "why", "pin"?}.
    A local label (+cu128) is not part of the version the builds are listed by."""
    from .install_plan import xformers_for

    return xformers_for(re.sub(r"\+.*", "", torch_version or "?"))


def check_xformers(torch_version: str | None, cuda: bool | None = None) -> Check:
    version = _version("xformers")
    if version is None:
        if not (_cuda_usable() if cuda is None else cuda):
            return Check("xformers", "ok", "not installed: attention uses PyTorch SDPA (xformers runs on CUDA only)")
        advice = _xformers_advice(torch_version)
        if advice["install"]:
            return Check("xformers", "warn", f"not installed, though {advice['why']} exists "
                         f"({advice['install']}); attention uses PyTorch SDPA until then",
                         f"{PIP} install --no-deps {advice['install']}  (what ./setup.sh's GPU plan installs)")
        return Check("xformers", "ok", f"not installed: {advice['why']}. To have it: {advice['pin']}",
                     advice["pin"])
    # xformers imports even when its kernels do not load; only a real call tells.
    code = ("import torch, xformers.ops as x\n"
            "assert torch.cuda.is_available(), 'no CUDA device: xformers kernels need one'\n"
            "q = torch.zeros(1, 8, 1, 64, device='cuda', dtype=torch.float16)\n"
            "x.memory_efficient_attention(q, q, q)\n")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        return Check("xformers", "ok", f"xformers {version}: its attention kernel runs on this torch")
    lines = [l for l in (probe.stderr or "").strip().splitlines() if l.strip()]
    reason = lines[-1] if lines else "unknown error"
    advice = _xformers_advice(torch_version)
    instead = (f"or {PIP} install --no-deps {advice['install']}, {advice['why']}" if advice["install"]
               else f"{advice['why'].split(':')[0]}; {advice['pin']}")
    return Check("xformers", "warn",
                 f"xformers {version} is installed but its kernels do not run with torch {torch_version} "
                 f"({reason}); Wimmel uses PyTorch SDPA instead",
                 f"{PIP} uninstall -y xformers  ({instead})")


def check_onnxruntime() -> list[Check]:
    installed = {name: v for name in ONNXRUNTIME_PACKAGES if (v := _version(name))}
    if not installed:
        return [Check("onnxruntime", "error", "no onnxruntime package is installed",
                      f"{PIP} install {_pinned('onnxruntime')}")]
    if len(installed) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in installed.items())
        return [Check("onnxruntime", "error",
                      f"several onnxruntime packages are installed ({listed}); they share the module "
                      "`onnxruntime` and overwrite each other",
                      f"{PIP} uninstall -y {' '.join(installed)} && {PIP} install {_pinned('onnxruntime')}  "
                      "(or onnxruntime-gpu alone on a CUDA machine)")]
    (name, version), = installed.items()
    try:
        import onnxruntime

        from .runtimes.onnx_runtime import CPU, provider_loads
        listed = onnxruntime.get_available_providers()
    except Exception as exc:  # noqa: BLE001
        return [Check("onnxruntime", "error", f"{name} {version} does not import: {exc}",
                      f"{PIP} install --force-reinstall {name}=={version}")]
    checks = [Check("onnxruntime", "ok", f"{name} {version}")]
    really, failed = [CPU], []
    for provider in listed:
        if provider in (CPU, "AzureExecutionProvider"):
            continue
        ok, why = provider_loads(provider)
        (really.append(provider) if ok else failed.append(f"{provider}: {why}"))
    found = f"listed: {', '.join(listed)}; really load (a session was created): {', '.join(really)}"
    if failed:
        checks.append(Check("onnxruntime providers", "warn", found + "; failed: " + "; ".join(failed),
                            "CUDAExecutionProvider needs the CUDA and cuDNN versions this onnxruntime-gpu "
                            "was built for (see onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider"
                            ".html#requirements); until then ONNX models run on the CPU"))
    else:
        checks.append(Check("onnxruntime providers", "ok", found))
    return checks


def check_opencv() -> Check:
    installed = {name: v for name in OPENCV_PACKAGES if (v := _version(name))}
    if len(installed) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in installed.items())
        keep = "opencv-python"
        return Check("opencv", "error", f"several OpenCV packages are installed ({listed}); they share the "
                     "module `cv2` and overwrite each other",
                     f"{PIP} uninstall -y {' '.join(installed)} && {PIP} install {_pinned(keep)}")
    if not installed:
        return Check("opencv", "warn", "OpenCV is not installed (OCR needs it)", f"{PIP} install {_pinned('rapidocr-onnxruntime')}")
    (name, version), = installed.items()
    return Check("opencv", "ok", f"{name} {version}")


def check_ffmpeg() -> Check:
    try:
        from .media.ffmpeg import ffmpeg_exe
        exe = ffmpeg_exe()
        first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except Exception as exc:  # noqa: BLE001
        return Check("ffmpeg", "error", f"no ffmpeg: {exc}; video and audio files cannot be read",
                     f"{PIP} install {_pinned('imageio-ffmpeg')}")
    on_path = shutil.which("ffmpeg")
    return Check("ffmpeg", "ok", f"{first} ({exe})" + (f"; also on PATH: {on_path}" if on_path else ""))


def check_espeak() -> Check:
    spec = importlib.util.find_spec("espeakng_loader")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None or not list(folder.glob("libespeak-ng.so*")) or not (folder / "espeak-ng-data").is_dir():
        return Check("espeak-ng", "error", "libespeak-ng (from espeakng-loader) is missing: text to speech "
                     "cannot turn text into phonemes", f"{PIP} install {_pinned('espeakng-loader')}")
    return Check("espeak-ng", "ok", f"libespeak-ng and its data in {folder}")


def check_numba_cache() -> Check:
    spec = importlib.util.find_spec("librosa")
    if spec is None:
        return Check("librosa cache", "warn", "librosa is not installed (audio tabs need it)",
                     f"{PIP} install {_pinned('librosa')}")
    cached = list(Path(spec.origin).parent.rglob("*.nbi"))
    if not cached:
        return Check("librosa cache", "warn", "librosa's numba functions are not compiled yet: the first "
                     "audio request will wait ~15 s", "./setup.sh  (it warms the cache)")
    return Check("librosa cache", "ok", f"{len(cached)} numba functions compiled and cached")


def check_disk(name: str, folder: Path) -> Check:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    found = f"{free / GiB:.1f} GiB free at {folder}"
    if free < 1 * GiB:
        return Check(name, "error", found + ": jobs and downloads will fail", f"free space on {probe}")
    if free < 5 * GiB:
        return Check(name, "warn", found + ": long video jobs and model downloads may not fit",
                     f"free space on {probe}, or choose another place (--data-dir / HF_HOME)")
    return Check(name, "ok", found)


def hf_cache_dir() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(home))


# ---------------------------------------------------------------------------------- report

def run_checks(data_dir: str | os.PathLike, extra: Iterable[Callable[[], Check | list[Check]]] = ()) -> list[Check]:
    checks = [check_python()]
    checks += check_torch()
    torch_version = _version("torch")
    checks += [check_torchvision(torch_version), check_torchaudio(torch_version), check_xformers(torch_version)]
    checks += check_onnxruntime()
    checks += [check_opencv(), check_ffmpeg(), check_espeak(), check_numba_cache(),
               check_disk("disk (data)", Path(data_dir).resolve()), check_disk("disk (model cache)", hf_cache_dir())]
    for more in extra:
        try:
            found = more()
        except Exception as exc:  # noqa: BLE001 - a broken check must not hide the others
            found = Check(getattr(more, "__name__", "check"), "error", f"the check itself failed: {exc}")
        checks += found if isinstance(found, list) else [found]
    return checks


def report(checks: list[Check]) -> dict:
    return {"checks": [dataclasses.asdict(c) for c in checks]}


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "error" for c in checks) else 0


def summary(checks: list[Check]) -> str:
    errors = [c.name for c in checks if c.status == "error"]
    warns = [c.name for c in checks if c.status == "warn"]
    line = f"doctor: {len(checks)} checks, {len(errors)} errors, {len(warns)} warnings"
    if errors:
        line += f" (errors: {', '.join(errors)})"
    if warns:
        line += f" (warnings: {', '.join(warns)})"
    return line + ("; run `python launch.py doctor` for fixes" if errors or warns else "")


def format_text(checks: list[Check]) -> str:
    mark = {"ok": "ok   ", "warn": "WARN ", "error": "ERROR"}
    lines = []
    for c in checks:
        lines.append(f"{mark[c.status]} {c.name}: {c.found}")
        if c.fix and c.status != "ok":
            lines.append(f"      fix: {c.fix}")
    lines.append(summary(checks))
    return "\n".join(lines)
