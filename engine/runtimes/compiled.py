"""Compiled (torch.compile) or exported (ONNX Runtime) versions of a torch module, cached on disk.

`accelerate(module, examples, mode, cache_dir, key)` returns an `Accelerated` module with the
same call signature (torch tensors in, torch tensors out) that runs one of:

- "eager":   the module itself;
- "compile": `torch.compile(module, dynamic=...)`; inductor's cache is directed into
             `<cache_dir>/inductor` (TORCHINDUCTOR_CACHE_DIR), so the cold compile (~17 s for a
             small conv net on 2 cores) is paid once per machine and a new process needs ~1-2 s;
- "onnx":    `torch.onnx.export` (dynamo exporter, dynamic axes where asked, one file:
             external_data=False) saved as `<cache_dir>/<key>-<hash>-torch<ver>-ort<ver>.onnx`,
             reused when present, run through `onnx_runtime.session`.

Preparation (compile or export, plus a first call on every example) is timed and kept in
`.info.prepare_s` so it can be shown. Outputs are checked against eager on the examples.
Anything that goes wrong (compile error, unexportable op, wrong outputs, a later call failing)
makes the module run eager from then on, with a logged warning and `.info.reason`; an
out-of-memory error is re-raised instead, as the engine's OOM recovery owns it.

The wrapper keeps the eager module as its child, so the engine still sees its parameters
(device, dtype, tensor_bytes) and can fall back to it; an ONNX session holds its own copy of the
weights on top.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..oom import is_oom

log = logging.getLogger(__name__)

MODES = ("eager", "compile", "onnx")
INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"
# Loggers that print a line per missing optional package during export ("torchvision is not
# installed. Skipping torchvision::nms"): noise for us, we never use those ops.
_NOISY_EXPORT_LOGGERS = ("torch.onnx._internal.exporter._registration",)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def default_cache_dir() -> Path:
    """$WIMMEL_COMPILE_CACHE, else ~/.cache/wimmel/compiled (per machine, like the hub cache)."""
    if folder := os.environ.get("WIMMEL_COMPILE_CACHE"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "wimmel" / "compiled"


@dataclass
class Preparation:
    """What preparing a model did; `mode` is what runs now (eager after a fall-back)."""

    key: str
    requested: str
    mode: str
    prepare_s: float = 0.0  # compile / export (or load of the cached file) + first calls
    reason: str | None = None  # why it runs eager although something else was asked for
    path: str | None = None  # the ONNX file
    exported: bool = False  # this preparation wrote the ONNX file (False: reused from the cache)
    provider: str | None = None  # the ONNX Runtime provider really used

    def as_dict(self) -> dict:
        return dict(vars(self), prepare_s=round(self.prepare_s, 3))


class Accelerated(nn.Module):
    """The module's call signature, run by the prepared runner; eager once anything failed."""

    def __init__(self, module: nn.Module, info: Preparation, runner: Callable[..., Any] | None = None):
        super().__init__()
        self.module = module
        self.info = info
        # Kept out of nn.Module's registry: a compiled module would register its parameters twice.
        self.__dict__["_runner"] = runner
        # The ONNX session in plain sight, so run records name the provider it really runs on.
        self.__dict__["session"] = getattr(runner, "session", None)

    @property
    def mode(self) -> str:
        return self.info.mode

    def forward(self, *args):
        runner = self.__dict__["_runner"]
        if runner is None:
            return self.module(*args)
        try:
            return runner(*args)
        except Exception as exc:  # noqa: BLE001 - the model must keep working
            if is_oom(exc):
                raise
            self.fall_back(f"{self.info.mode} run failed on inputs "
                           f"{[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]}: {_short(exc)}")
            return self.module(*args)

    def fall_back(self, reason: str) -> None:
        log.warning("%s: %s falls back to eager: %s", self.info.key, self.info.mode, reason)
        self.info.mode, self.info.reason = "eager", reason
        self.__dict__["_runner"] = None
        self.__dict__["session"] = None


def _short(exc: BaseException) -> str:
    """One line naming the cause. torch.onnx's TorchExportError opens with advice in colour;
    its cause is the line after '## Exception summary'."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if "## Exception summary" in lines and lines.index("## Exception summary") + 1 < len(lines):
        lines = lines[lines.index("## Exception summary") + 1:]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


# ---- hashing and file names


def weights_hash(module: nn.Module, examples: Sequence[tuple] = (), dynamic: bool = True) -> str:
    """16 hex digits of sha256 over the weights (names, dtypes, shapes, bytes) and the input
    signature the export was asked for (input ranks and dtypes, or shapes when static)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    if examples:
        signature = [(str(a.dtype), a.ndim if dynamic else tuple(a.shape))
                     for a in examples[0] if isinstance(a, torch.Tensor)]
        digest.update(repr((dynamic, signature)).encode())
    return digest.hexdigest()[:16]


def _versions() -> str:
    import onnxruntime

    return f"torch{torch.__version__}-ort{onnxruntime.__version__}"


def onnx_path(cache_dir: str | os.PathLike, key: str, module: nn.Module, examples: Sequence[tuple] = (),
              dynamic: bool = True) -> Path:
    return Path(cache_dir) / f"{key}-{weights_hash(module, examples, dynamic)}-{_versions()}.onnx"


# ---- preparation


def _inputs(examples) -> list[tuple]:
    if isinstance(examples, torch.Tensor):
        return [(examples,)]
    examples = list(examples)
    if examples and isinstance(examples[0], torch.Tensor):
        return [tuple(examples)]  # one call's positional inputs
    return [tuple(e) if isinstance(e, (tuple, list)) else (e,) for e in examples]


def _fresh(args: tuple) -> tuple:
    """The same shapes and value range, other values (a fixed seed: runs are repeatable)."""
    gen = torch.Generator().manual_seed(1234)
    out = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.numel():
            low, high = float(a.min()), float(a.max())
            if low == high:
                low, high = low - 1.0, high + 1.0
            noise = torch.rand(a.shape, generator=gen, dtype=torch.float32)
            a = (noise * (high - low) + low).to(dtype=a.dtype, device=a.device)
        out.append(a)
    return tuple(out)


def _check_outputs(got: Any, want: Any, what: str) -> None:
    """Raise when `got` differs from eager's `want` beyond float noise."""
    got_t = [got] if isinstance(got, torch.Tensor) else list(got)
    want_t = [want] if isinstance(want, torch.Tensor) else list(want)
    if len(got_t) != len(want_t):
        raise ValueError(f"{what}: {len(got_t)} outputs, eager gives {len(want_t)}")
    for i, (g, w) in enumerate(zip(got_t, want_t)):
        if tuple(g.shape) != tuple(w.shape):
            raise ValueError(f"{what}: output {i} has shape {tuple(g.shape)}, eager {tuple(w.shape)}")
        if not w.is_floating_point():
            if not torch.equal(g.to(w.device), w):
                raise ValueError(f"{what}: output {i} differs from eager")
            continue
        g, w = g.to(w.device).float(), w.float()
        diff = float((g - w).abs().max()) if w.numel() else 0.0
        scale = float(w.abs().max()) if w.numel() else 0.0
        tolerance = (1e-3 if w.dtype == torch.float32 else 1e-2) * (1.0 + scale)
        if not diff <= tolerance:  # also catches NaN
            raise ValueError(f"{what}: output {i} differs from eager by {diff:.3g} (tolerance {tolerance:.3g})")


def _set_inductor_cache(folder: Path) -> None:
    """Point inductor's on-disk caches (FX graphs, compiled C++ kernels, autotuning) at `folder`.

    Inductor reads TORCHINDUCTOR_CACHE_DIR each time it touches its cache (torch 2.13,
    torch/_inductor/runtime/cache_dir_utils.py: cache_dir()), so setting it before the compile
    and before each compiled call (which may recompile for a new shape) is enough. Process-wide
    by torch's design: cache_dir() itself writes the variable when it is unset."""
    folder_s = str(folder)
    if os.environ.get(INDUCTOR_ENV) != folder_s:
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[INDUCTOR_ENV] = folder_s


def _prepare_compile(module: nn.Module, examples: list[tuple], cache_dir: Path, dynamic: bool | None):
    folder = cache_dir / "inductor"
    _set_inductor_cache(folder)
    compiled = torch.compile(module, dynamic=dynamic)

    def run(*args):
        _set_inductor_cache(folder)
        return compiled(*args)

    return run, {}


def _export(module: nn.Module, example: tuple, path: Path, dynamic: bool) -> None:
    import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; a clear ImportError here)

    dynamic_shapes = None
    if dynamic:
        # Dim.AUTO: dynamic wherever the model allows it, static where it needs a fixed size
        # (ONet's dense layer fixes 48x48). Sizes 0 and 1 in the example are taken as static.
        dynamic_shapes = tuple({d: torch.export.Dim.AUTO for d in range(a.ndim)} if isinstance(a, torch.Tensor)
                               else None for a in example)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    noisy = [logging.getLogger(name) for name in _NOISY_EXPORT_LOGGERS]
    levels = [logger.level for logger in noisy]
    try:
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        torch.onnx.export(module, example, tmp, dynamo=True, dynamic_shapes=dynamic_shapes,
                          external_data=False, verbose=False)
        os.replace(tmp, path)  # atomic: another process never reads half a file
    finally:
        for logger, level in zip(noisy, levels):
            logger.setLevel(level)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _prepare_onnx(module: nn.Module, examples: list[tuple], reference: Any, cache_dir: Path, key: str,
                  dynamic: bool, device: str, threads: int | None, options: dict):
    from . import onnx_runtime

    path = onnx_path(cache_dir, key, module, examples, dynamic)
    exported = False
    if not path.exists():
        _export(module, examples[0], path, dynamic)
        exported = True
    try:
        session = onnx_runtime.session(path, device, threads=threads or torch.get_num_threads(), **options)
    except Exception:  # noqa: BLE001 - a damaged cache file: export again, once
        if exported:
            raise
        log.warning("%s: cached %s does not load; exporting again", key, path.name)
        path.unlink(missing_ok=True)
        _export(module, examples[0], path, dynamic)
        exported = True
        session = onnx_runtime.session(path, device, threads=threads or torch.get_num_threads(), **options)
    names = [i.name for i in session.get_inputs()]
    out_device = torch.device(device)
    single = isinstance(reference, torch.Tensor)
    as_list = isinstance(reference, list)

    def run(*args):
        if len(args) != len(names):
            raise TypeError(f"the ONNX model takes {len(names)} inputs ({names}), got {len(args)}")
        feed = {name: a.detach().to("cpu").contiguous().numpy() for name, a in zip(names, args)}
        outs = [torch.from_numpy(o).to(out_device) for o in session.run(None, feed)]
        if single:
            return outs[0]
        return outs if as_list else tuple(outs)

    run.session = session
    return run, {"path": str(path), "exported": exported, "provider": onnx_runtime.provider_of(session)}


def _device_of(module: nn.Module) -> str:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return str(tensor.device) if tensor is not None else "cpu"


def onnx_exportable() -> bool:
    """Whether the ONNX path can be taken at all (torch.onnx's exporter needs onnxscript)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))


@dataclass(frozen=True)
class ServePlan:
    """How a torch net we export to ONNX is served, as its ModelSpec says it: `runtime`, the
    `accelerate` mode its loader takes and the spec's `device`."""
    runtime: str
    mode: str
    device: str


def serve_plan() -> ServePlan:
    """Exported to ONNX and run by ONNX Runtime (on the GPU where its CUDA provider really loads,
    else on the CPU) when the exporter is installed; else eager torch on the default device."""
    if onnx_exportable():
        from . import onnx_runtime
        return ServePlan("onnxruntime", "onnx", onnx_runtime.spec_device())
    return ServePlan("torch", "eager", "auto")


def accelerate(module: nn.Module, examples, mode: str | None = "eager",
               cache_dir: str | os.PathLike | None = None, key: str | None = None, *,
               dynamic: bool = True, threads: int | None = None, session_options: dict | None = None) -> Accelerated:
    """`module` (eval mode, on its device) run as `mode`; see the module docstring.

    examples: the inputs of one call (a tensor or a tuple of tensors) or a list of such calls.
    The first is what the ONNX export traces; all of them are run once while preparing (so
    torch.compile meets the shapes it will see) and compared with eager.
    dynamic: every input dimension may vary (a size of 1 in the first example stays fixed).
    key: the file name stem of the ONNX file (bump it when the module's code changes).
    threads: ONNX Runtime intra-op threads (default: torch.get_num_threads(), the same as eager).
    session_options: more keywords for onnx_runtime.session (arena, cuda_options).
    """
    mode = mode or "eager"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    key = key or type(module).__name__.lower()
    info = Preparation(key=key, requested=mode, mode=mode)
    if mode == "eager":
        return Accelerated(module, info)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    calls = _inputs(examples)
    if not calls:
        raise ValueError("accelerate needs example inputs")
    # Also fresh values in the first example's shapes: an export that baked a value computed
    # outside torch (numpy, .item()) into a constant agrees with eager on the traced example only.
    calls = calls + [_fresh(calls[0])]
    with torch.inference_mode():
        wanted = [module(*args) for args in calls]  # the reference; not part of prepare_s
    started = time.perf_counter()
    # torch.compile compiles at the first call: its errors surface in the checking calls.
    stage = "torch.compile" if mode == "compile" else "ONNX export"
    try:
        if mode == "compile":
            runner, extra = _prepare_compile(module, calls, cache, dynamic)
        else:
            runner, extra = _prepare_onnx(module, calls, wanted[0], cache, key, dynamic, _device_of(module),
                                          threads, session_options or {})
            stage = "ONNX Runtime"
        for name, value in extra.items():
            setattr(info, name, value)
        with torch.inference_mode():
            for i, (args, want) in enumerate(zip(calls, wanted)):
                _check_outputs(runner(*args), want, f"example {i} {[tuple(a.shape) for a in args]}")
    except Exception as exc:  # noqa: BLE001 - never break the model: run it eager
        if is_oom(exc):
            raise
        info.prepare_s = time.perf_counter() - started
        accelerated = Accelerated(module, info)
        accelerated.fall_back(f"{stage} failed: {_short(exc)}")
        return accelerated
    info.prepare_s = time.perf_counter() - started
    log.info("%s: %s ready in %.2f s%s", key, mode, info.prepare_s,
             f" ({'exported' if info.exported else 'cached'} {info.path})" if info.path else "")
    return Accelerated(module, info, runner)
