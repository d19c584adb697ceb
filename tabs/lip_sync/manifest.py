"""Wav2Lip GAN as a hub file: FaceFusion's ONNX export wav2lip_gan_96 (its default lip syncer).
Every fact here comes from docs/face_studio_facts.md §3 (with its sources); none was read from the
real graph, which could not be downloaded here.
"""
from __future__ import annotations

from store.manifest import HubFile, Tensor

MiB = 1024**2
_FF = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
_HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"

MEL = (1, 1, 80, 16)      # one mel window: 80 bands x 16 hops of 12.5 ms (0.2 s), facts §3 "Inputs"
FACES = (1, 6, 96, 96)    # masked crop (lower half zeroed) + reference crop, BGR / 255
FACE_OUT = (1, 3, 96, 96)  # the crop with new lips, sigmoid [0, 1], BGR

# No source gives the size of FaceFusion's file. Another ONNX export of the same network
# (bluefoxcreation/Wav2lip-Onnx wav2lip_gan.onnx) is 145,175,471 bytes (facts §3): fp32 weights of
# the same shapes, so FaceFusion's is taken to be as large for the engine's first estimate (the
# engine replaces it by the measured load after the first run).
WAV2LIP_BYTES = 145_175_471

# Activations, reasoned (facts §6 has no measurement): at batch 1 the largest maps are 64-80
# channels at 96x96 (2.4-3 MB each); ONNX Runtime's im2col buffer for the output block's 3x3
# convolution over 80 channels at 96 px is 80 * 9 * 96 * 96 * 4 B = 26.5 MB; the encoder's skip
# maps kept for the decoder add under 8 MB. About 40 MB, doubled for the arena's growth steps:
# 64 MiB. Replaced by the engine's measurement after the first run.
ACTIVATIONS = 64 * MiB

WAV2LIP_GAN = HubFile(
    name="wav2lip-gan-96",
    file="wav2lip_gan_96.onnx",
    urls=(_FF + "wav2lip_gan_96.onnx", _HF + "wav2lip_gan_96.onnx"),
    # FaceFusion's sha256 is not published anywhere found (facts §3 and §8): none is invented.
    # The store then downloads it only when the user trusts the URLs, and keeps it only when its
    # inputs and outputs fit (store/hub_files.py); the tab says the hash could not be checked.
    # bluefoxcreation's copy has known hashes but unknown input names, so it is not listed.
    sha256=(),
    inputs=(Tensor("source", MEL, "float32"), Tensor("target", FACES, "float32")),
    # FaceFusion reads output 0 and no source names it: matched by position (name None).
    outputs=(Tensor(None, FACE_OUT, "float32"),),
    licence=("Wav2Lip (Rudrabha): personal, research or non-commercial use only; commercial use "
             "is prohibited (trained on LRS2), commercial requests go to the authors"),
    commercial=False,
    min_memory=WAV2LIP_BYTES + ACTIVATIONS,
    size=None,   # FaceFusion's file size is not known (see WAV2LIP_BYTES)
    notes=("FaceFusion models-3.0.0 wav2lip_gan_96: type wav2lip, size 96x96, its default lip syncer.",
           "No sha256 of FaceFusion's file is known: a download or a brought file is taken only when "
           "trusted, and only when its inputs and outputs fit."),
)

ENTRIES = {"Wav2Lip GAN": WAV2LIP_GAN}   # one network for the function (as the tab offers it)
