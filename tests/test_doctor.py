"""The doctor on this machine, and on the broken installs users end up with.

Broken installs are made the way pip leaves them: a `<name>-<version>.dist-info` folder on the
path, which is all importlib.metadata (and pip) look at to say a package is installed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import doctor

ROOT = Path(__file__).resolve().parents[1]


def fake_dist(folder: Path, name: str, version: str) -> None:
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def run_doctor(*args, extra_path=None):
    env = {**os.environ}
    if extra_path:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), "doctor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def by_name(report):
    return {c["name"]: c for c in report["checks"]}


def test_this_install_is_healthy_and_says_what_it_found(tmp_path):
    done = run_doctor("--json", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    checks = by_name(json.loads(done.stdout))
    assert checks["torch"]["status"] == "ok" and "2.13.0" in checks["torch"]["found"]
    providers = checks["onnxruntime providers"]["found"]
    assert "really load (a session was created): CPUExecutionProvider" in providers
    assert checks["ffmpeg"]["status"] == "ok" and checks["espeak-ng"]["status"] == "ok"
    assert checks["weights: face-detector"]["status"] == "ok"
    assert all(c["status"] in ("ok", "warn", "error") and c["found"] for c in checks.values())


def test_two_onnxruntime_packages_are_an_error_with_the_fix(tmp_path):
    fake_dist(tmp_path, "onnxruntime-gpu", "1.22.0")
    done = run_doctor("--json", extra_path=tmp_path)
    assert done.returncode == 1
    check = by_name(json.loads(done.stdout))["onnxruntime"]
    assert check["status"] == "error" and "onnxruntime-gpu 1.22.0" in check["found"]
    assert "uninstall -y onnxruntime onnxruntime-gpu" in check["fix"] and "onnxruntime==1.32.0" in check["fix"]


def test_opencv_and_headless_together_are_an_error(tmp_path):
    fake_dist(tmp_path, "opencv-python-headless", "4.10.0.84")
    done = run_doctor(extra_path=tmp_path)
    assert done.returncode == 1
    assert "ERROR opencv: several OpenCV packages are installed" in done.stdout
    assert "fix: " in done.stdout and "opencv-python-headless" in done.stdout


@pytest.mark.parametrize("torch_version, vision, expected", [
    ("2.13.0", "0.28.0", None), ("2.13.0", "0.24.1", "0.28"), ("2.9.1", "0.24.1", None), ("2.5.0", "0.21.0", "0.20"),
])
def test_torchvision_is_matched_to_torch(monkeypatch, torch_version, vision, expected):
    monkeypatch.setattr(doctor, "_version", lambda name: vision if name == "torchvision" else None)
    monkeypatch.setattr(doctor.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))  # the import probe
    check = doctor.check_torchvision(torch_version)
    if expected is None:
        assert check.status == "ok"
    else:
        assert check.status == "error" and f"torchvision=={expected}.*" in check.fix
        assert "torchvision::nms" in check.found


@pytest.mark.parametrize("torch_version, audio, ok", [
    ("2.13.0", "2.13.0", True), ("2.13.0", "2.11.0", True), ("2.13.0", "2.9.1", False), ("2.10.0", "2.11.0", False),
])
def test_torchaudio_rules_before_and_after_the_stable_abi(monkeypatch, torch_version, audio, ok):
    monkeypatch.setattr(doctor, "_version", lambda name: audio if name == "torchaudio" else None)
    check = doctor.check_torchaudio(torch_version)
    assert (check.status == "ok") is ok
    if not ok:
        assert check.fix.endswith("uninstall -y torchaudio)") and f"torchaudio=={torch_version[:4]}" in check.fix


def test_xformers_without_working_kernels_is_a_warning_with_the_fix(tmp_path, monkeypatch):
    # A stand-in xformers that imports but whose kernels cannot run here, like the PyPI build
    # (made for torch 2.10 + CUDA 12.8) beside a CPU torch 2.13.
    package = tmp_path / "xformers"
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops" / "__init__.py").write_text(
        "def memory_efficient_attention(*a):\n    raise RuntimeError('xFormers can\\'t load C++/CUDA extensions')\n")
    fake_dist(tmp_path, "xformers", "0.0.35")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    check = doctor.check_xformers("2.13.0")
    assert check.status == "warn" and "xformers 0.0.35" in check.found and "SDPA" in check.found
    assert "uninstall -y xformers" in check.fix
    # No build exists for torch 2.13: the fix says so and what to pin (install_plan's rule).
    assert "no xformers build exists for torch 2.13.0" in check.fix and "pin torch==2.10.0" in check.fix
    assert "install --no-deps xformers==0.0.35" in doctor.check_xformers("2.10.0+cu128").fix


@pytest.mark.parametrize("torch_version, build", [("2.10.0+cu128", "0.0.35"), ("2.9.1", "0.0.33.post2"),
                                                  ("2.13.0", None)])
def test_missing_xformers_on_a_cuda_machine_says_whether_a_build_exists_and_what_to_pin(
        monkeypatch, torch_version, build):
    from engine import install_plan

    monkeypatch.setattr(doctor, "_version", lambda name: None)
    check = doctor.check_xformers(torch_version, cuda=True)
    if build:   # setup.sh's GPU plan would have installed it: a warning with the same pin
        assert install_plan.XFORMERS_FOR_TORCH[torch_version.split("+")[0]] == build
        assert check.status == "warn" and f"xformers=={build}" in check.found
        assert check.fix.endswith(f"install --no-deps xformers=={build}  (what ./setup.sh's GPU plan installs)")
    else:       # nothing to install: SDPA, and the torch to pin for xformers
        assert check.status == "ok" and "no xformers build exists for torch 2.13.0" in check.found
        assert "pin torch==2.10.0 in requirements.txt" in check.found and "xformers==0.0.35" in check.fix
    # Without CUDA (this machine: torch is a CPU build) there is nothing to advise.
    here = doctor.check_xformers(torch_version)
    assert here.status == "ok" and here.found.endswith("(xformers runs on CUDA only)") and not here.fix


def test_low_disk_and_summary_line(monkeypatch, tmp_path):
    usage = type("Usage", (), {"free": 512 * 1024**2})
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage)
    check = doctor.check_disk("disk (data)", tmp_path / "not-yet")
    assert check.status == "error" and "0.5 GiB free" in check.found
    line = doctor.summary([check, doctor.Check("x", "warn", "y")])
    assert line.startswith("doctor: 2 checks, 1 errors, 1 warnings") and "launch.py doctor" in line


def test_missing_ffmpeg_is_an_error_with_the_install_command(monkeypatch):
    import engine.media.ffmpeg as video

    def no_ffmpeg():
        raise video.MediaError(video.NO_FFMPEG, "imageio-ffmpeg not found")

    monkeypatch.setattr(video, "ffmpeg_exe", no_ffmpeg)
    check = doctor.check_ffmpeg()
    assert check.status == "error" and "cannot be read" in check.found
    assert check.fix.endswith("pip install imageio-ffmpeg==0.8.1")
