"""The two face restorers as hub files: FaceFusion's ONNX exports of GFPGAN v1.4 and CodeFormer.
Every fact here comes from docs/face_studio_facts.md §2 (with its sources); none was read from the
real graphs, which could not be downloaded here.
"""
from __future__ import annotations

from store.manifest import HubFile, Tensor

MiB = 1024**2
_FF = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
_HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"
_FACE = (1, 3, 512, 512)   # ffhq_512 crop, RGB in [-1, 1], NCHW (facts §2a "Input")

# Activations, not measured on the real graphs (facts §6: no source states them): both nets run
# 64-channel float32 maps at the full 512 px (GFPGAN's clean StyleGAN2 decoder at 512, CodeFormer's
# first encoder and last decoder stage), 64 MiB each; a dozen alive at once is about 768 MiB.
# Replaced by the engine's measurement after the first run.
ACTIVATIONS = 768 * MiB

GFPGAN_SIZE = 340_299_087        # the FaceFusion URL's bytes, per a third-party pin (facts §2a)
CODEFORMER_SIZE = 377 * 10**6    # "377 MB" on the mirror's LFS page; no exact byte count found

GFPGAN = HubFile(
    name="gfpgan-1.4",
    file="gfpgan_1.4.onnx",
    urls=(_FF + "gfpgan_1.4.onnx", _HF + "gfpgan_1.4.onnx"),
    # FaceFusion's copy (uwg mirror of its assets). The widely mirrored GFPGANv1.4.onnx
    # (6548e54c...) is another export whose names differ, so it is not listed.
    sha256=("accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",),
    inputs=(Tensor("input", _FACE, "float32"),),
    # FaceFusion reads output 0 and no source names it: matched by position (name None).
    outputs=(Tensor(None, _FACE, "float32"),),
    licence=("Apache-2.0 (TencentARC GFPGAN), except third-party parts its LICENSE lists: StyleGAN2 "
             "code under the NVIDIA licence (non-commercial) and DFDNet code under CC BY-NC-SA 4.0; "
             "trained on FFHQ"),
    # Apache-2.0 for the v1.4 clean architecture, but whether the NVIDIA clause reaches the
    # weights is not settled by any source (facts §2a, §7): the user accepts it explicitly.
    commercial=False,
    min_memory=GFPGAN_SIZE + ACTIVATIONS,
    size=GFPGAN_SIZE,
    notes=("FaceFusion models-3.0.0 gfpgan_1.4: template ffhq_512, size 512, its default face enhancer.",
           "Output 0 is RGB in [-1, 1]; its name is not fixed, so it is read from the session."),
)

CODEFORMER = HubFile(
    name="codeformer",
    file="codeformer.onnx",
    urls=(_FF + "codeformer.onnx", _HF + "codeformer.onnx"),
    sha256=("21710e7ab61c82683576c428e9c1b6fe1ed419586b7b39e394c3449c294b550f",),
    inputs=(Tensor("input", _FACE, "float32"),
            # fidelity w in [0, 1], numpy.array([w]).astype(numpy.double) in FaceFusion (facts §2b)
            Tensor("weight", (1,), "float64")),
    outputs=(Tensor(None, _FACE, "float32"),),   # not named by any source, as GFPGAN's
    licence=("S-Lab License 1.0 (sczhou CodeFormer): redistribution and use for non-commercial "
             "purposes only; commercial use needs the authors' permission"),
    commercial=False,
    min_memory=CODEFORMER_SIZE + ACTIVATIONS,
    size=CODEFORMER_SIZE,
    notes=("FaceFusion models-3.0.0 codeformer (CRC32 1456f3ab in its .hash): template ffhq_512, size 512.",
           "Other CodeFormer exports feed the fidelity as 'w' float32: they do not fit this signature."),
)

ENTRIES = {"GFPGAN 1.4": GFPGAN, "CodeFormer": CODEFORMER}   # as the tab offers them
