"""The README's table of every network the app ships, written from the registry.

    .venv/bin/python -m app.models_table          prints the Markdown table

"Device with a GPU" is where each model runs on a machine whose GPU every runtime can use: the
specs are built as they would be there (ONNX Runtime's CUDA provider and CTranslate2's CUDA
taken to work), so the table reads the same on this CPU machine as on a GPU one.
"""
from __future__ import annotations

from unittest import mock

from engine import ModelSpec
from engine.runtimes import onnx_runtime
from tabs.catalog import capability_of, default_specs
from tabs.stt import model as stt_model

COLUMNS = ["model", "function", "networks", "capability", "runtime", "device with a GPU", "weights from"]


def _as_on_a_gpu(specs) -> list[ModelSpec]:
    with mock.patch.object(onnx_runtime, "cuda_works", lambda: True), \
            mock.patch.object(stt_model, "cuda_works", lambda: True):
        return list(specs())


def rows() -> list[dict]:
    capability = capability_of()
    return [{"model": spec.name, "function": spec.function, "networks": spec.networks,
             "capability": capability[spec.name], "runtime": spec.runtime,
             "device with a GPU": "GPU" if spec.device == "auto" else spec.device.upper(),
             "weights from": spec.source, "why": spec.runtime_reason} for spec in _as_on_a_gpu(default_specs)]


def markdown(found: list[dict]) -> str:
    """The table, then why each runtime other than torch and ONNX Runtime is kept."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "\\|") for c in COLUMNS) + " |" for row in found]
    reasons = [f"- `{row['model']}` ({row['runtime']}): {row['why']}" for row in found if row["why"]]
    count = (f"{sum(row['networks'] for row in found)} networks in {len(found)} models, each model one "
             "function (a network is a graph with its own weights; a pipeline's stages count each).")
    return "\n".join([count, ""] + lines + ([""] + reasons if reasons else []))


if __name__ == "__main__":
    print(markdown(rows()))
