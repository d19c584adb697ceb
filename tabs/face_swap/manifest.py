"""The face swapper and its identity embedder as hub files: InsightFace's inswapper_128 and the
ArcFace w600k_r50 (buffalo_l) whose embedding it takes. Every fact here comes from
docs/face_studio_facts.md §1 (with its sources); none was read from the real graphs, which could not
be downloaded here. Both are non-commercial (InsightFace's licence): the user must accept it.
"""
from __future__ import annotations

from store.manifest import HubFile, Tensor

MiB = 1024**2
_FF = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
_HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"

INSWAPPER_SIZE = 554_253_681     # the original file's LFS size (facts §1a); FaceFusion's copy is ~555 MB
ARCFACE_SIZE = 174_383_860       # buffalo_l w600k_r50.onnx (facts §1b); FaceFusion's copy is ~174 MB

# Activations and ONNX Runtime's arena, not measured on the real graphs (facts §6: no source states
# them). The swapper runs at 128 px and the ArcFace ResNet-50 at 112 px: a few MiB per feature map;
# these margins are generous guesses the engine replaces with its measurement after the first run.
SWAP_ACTIVATIONS = 256 * MiB
EMBED_ACTIVATIONS = 128 * MiB

_INSIGHTFACE = ("InsightFace: \"available for non-commercial research purposes only\"; for the inswapper "
                "models \"please contact contact@insightface.ai for licensing\"")

INSWAPPER = HubFile(
    name="inswapper-128",
    file="inswapper_128.onnx",
    # The original bytes first (their sha256 is the first listed), then FaceFusion's copy, which it
    # modified (the second sha256, read on a mirror of its assets; a third value in a write-up
    # could not be confirmed and is not listed: such a copy can still be brought with "trust").
    urls=("https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx",
          _FF + "inswapper_128.onnx", _HF + "inswapper_128.onnx"),
    sha256=("e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
            "a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7"),
    # FaceFusion feeds both by name (facts §1a): the arcface_128 crop, RGB in [0, 1], and the latent.
    inputs=(Tensor("target", (1, 3, 128, 128), "float32"), Tensor("source", (1, 512), "float32")),
    # One output, RGB in [0, 1]; its name appears in no source read, so it is matched by position.
    outputs=(Tensor(None, (1, 3, 128, 128), "float32"),),
    licence=_INSIGHTFACE,
    commercial=False,
    min_memory=INSWAPPER_SIZE + SWAP_ACTIVATIONS,
    size=INSWAPPER_SIZE,
    notes=("FaceFusion models-3.0.0 inswapper_128: template arcface_128, size 128, mean 0, std 1.",
           "The last graph initializer is the 512x512 emap the source embedding is multiplied by."),
)

ARCFACE = HubFile(
    name="arcface-w600k-r50",
    file="arcface_w600k_r50.onnx",
    # FaceFusion's copy (its input renamed 'input'), then buffalo_l's original w600k_r50.onnx as
    # Hugging Face staff mirror it (its input name is not known: inputs are matched by position).
    urls=(_FF + "arcface_w600k_r50.onnx", _HF + "arcface_w600k_r50.onnx",
          "https://huggingface.co/public-data/insightface/resolve/refs%2Fpr%2F1/models/buffalo_l/w600k_r50.onnx"),
    sha256=("f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1",
            "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"),
    inputs=(Tensor(None, (None, 3, 112, 112), "float32"),),   # arcface_112_v2 crop, RGB, (x - 127.5) / 127.5
    outputs=(Tensor(None, (None, 512), "float32"),),          # the raw 512-d embedding
    licence=_INSIGHTFACE + "; buffalo_l's licence file says \"grant\": \"non-commercial\"",
    commercial=False,
    min_memory=ARCFACE_SIZE + EMBED_ACTIVATIONS,
    size=ARCFACE_SIZE,
    notes=("FaceFusion models-3.0.0 arcface_w600k_r50 = InsightFace buffalo_l w600k_r50 (ResNet-50, WebFace600K).",
           "inswapper accepts only this model's embedding (InsightFace's in_swapper README)."),
)

ENTRIES = {"Face swapper (inswapper_128)": INSWAPPER, "Face embedder (ArcFace w600k_r50)": ARCFACE}
