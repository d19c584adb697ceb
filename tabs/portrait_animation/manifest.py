"""The four LivePortrait networks portrait animation drives, as hub files: FaceFusion's ONNX exports
(models-3.0.0) of the appearance feature extractor, the motion extractor, the stitcher and the
generator (warping module + SPADE decoder). Every fact here comes from docs/face_studio_facts.md §4
(with its sources); none was read from the real graphs, which could not be downloaded here.

Only two of the four have a sha256 from any source (the feature extractor and the generator, from
a mirror of FaceFusion's assets). The other two list none: the store then downloads or takes them
only when the user ticks "trust" and their inputs and outputs fit, and the tab says that their
hash could not be checked. No hash is made up here.

The eye and lip retargeters (FaceFusion's face_editor) are not needed to drive a portrait with
LivePortrait's defaults (flag_eye_retargeting and flag_lip_retargeting False) and are left out.
"""
from __future__ import annotations

from store.manifest import HubFile, Tensor

MiB = 1024**2
_FF = "https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
_HF = "https://huggingface.co/facefusion/models-3.0.0/resolve/main/"

CROP = (1, 3, 256, 256)                 # the 512 crop resized to 256, RGB / 255, NCHW (facts §4a)
FEATURE_VOLUME = (1, 32, 16, 64, 64)    # appearance features, C x D x H x W (facts §4a)
POINTS = (1, 21, 3)                     # 21 implicit 3-D keypoints (LP models.yaml num_kp: 21)
FACE_OUT = (1, 3, 512, 512)             # the generator's 512 RGB in [0, 1] (LP upscale: 2)

# Sizes: "3.35 MB" and "222 MB" on the mirror's LFS pages; the motion extractor's ONNX size is not
# found, its .pth is 112,545,506 B (28.12M params x 4 B); the stitcher is LP's 126-128-128-64-65
# MLP: 45,249 float32 weights, 181 kB (the same count for the lip retargeter, 65-128-128-64-63,
# gives 149 kB against its 151 kB LFS size, so the graph adds ~2 kB).
FEATURE_SIZE = 3_350_000
MOTION_SIZE = 112_545_506
STITCHER_SIZE = 183_000
GENERATOR_SIZE = 222_000_000

# Activations above the loaded graph, not measured on the real graphs (facts §6: no source states
# them); the engine replaces each with its own measurement after the first run. Reasoning, float32:
# - generator: its warping module makes a 3-D flow over the 32x16x64x64 volume (8 MiB) and the
#   deformed volume, the SPADE decoder then runs 256-512 channels at 64-128 px and 64 channels at
#   512 px (64 MiB per map): a dozen maps of 16-64 MiB alive at once, about 512 MiB.
# - motion extractor: a ConvNeXt-V2 at 256 px, its first stage 96 channels at 64x64 (1.5 MiB per
#   map): 64 MiB is ample.
# - feature extractor: 64-256 channels at 64-256 px, the volume itself 8 MiB: 96 MiB.
# - stitcher: an MLP on 126 numbers: 1 MiB.
GENERATOR_ACTIVATIONS = 512 * MiB
MOTION_ACTIVATIONS = 64 * MiB
FEATURE_ACTIVATIONS = 96 * MiB
STITCHER_ACTIVATIONS = 1 * MiB

_LICENCE = ("MIT (KwaiVGI LivePortrait, \"Copyright (c) 2024 Kuaishou Visual Generation and Interaction "
            "Center\"); its InsightFace cropper is non-commercial but is not used here")
_NO_HASH = "No source gives this file's sha256: a download or a brought copy is taken only when trusted."


def _urls(file: str) -> tuple[str, ...]:
    return (_FF + file, _HF + file)


FEATURE_EXTRACTOR = HubFile(
    name="live-portrait-feature-extractor",
    file="live_portrait_feature_extractor.onnx",
    urls=_urls("live_portrait_feature_extractor.onnx"),
    sha256=("980d26afc9af6d1b6c946329df08b89a4a8582c9bb668d9475f5254e69434d15",),   # uwg mirror (facts §4a)
    inputs=(Tensor("input", CROP, "float32"),),
    outputs=(Tensor(None, FEATURE_VOLUME, "float32"),),   # no source names it: matched by position
    licence=_LICENCE,
    commercial=True,
    min_memory=FEATURE_SIZE + FEATURE_ACTIVATIONS,
    size=FEATURE_SIZE,
    notes=("LivePortrait's appearance feature extractor F (0.84M params): the portrait's 3-D feature volume.",),
)

MOTION_EXTRACTOR = HubFile(
    name="live-portrait-motion-extractor",
    file="live_portrait_motion_extractor.onnx",
    urls=_urls("live_portrait_motion_extractor.onnx"),
    sha256=(),
    inputs=(Tensor("input", CROP, "float32"),),
    # In FaceFusion's order: pitch, yaw, roll (degrees), scale, translation, expression, canonical
    # points. Their names appear in no source (FaceFusion unpacks them by position); the (1,1) and
    # (1,3) shapes are inferred from their use (facts §8).
    outputs=(Tensor(None, (1, 1)), Tensor(None, (1, 1)), Tensor(None, (1, 1)), Tensor(None, (1, 1)),
             Tensor(None, (1, 3)), Tensor(None, POINTS), Tensor(None, POINTS)),
    licence=_LICENCE,
    commercial=True,
    min_memory=MOTION_SIZE + MOTION_ACTIVATIONS,
    size=MOTION_SIZE,
    notes=("LivePortrait's motion extractor M (28.12M params): head pose, scale, translation, expression "
           "and canonical keypoints of a 256 px face crop.", _NO_HASH),
)

STITCHER = HubFile(
    name="live-portrait-stitcher",
    file="live_portrait_stitcher.onnx",
    urls=_urls("live_portrait_stitcher.onnx"),
    sha256=(),
    # FaceFusion's names: source = the wanted (driven) points, target = the portrait's own points.
    inputs=(Tensor("source", POINTS, "float32"), Tensor("target", POINTS, "float32")),
    outputs=(Tensor(None, POINTS, "float32"),),   # the driven points, stitched
    licence=_LICENCE,
    commercial=True,
    min_memory=STITCHER_SIZE + STITCHER_ACTIVATIONS,
    size=STITCHER_SIZE,
    notes=("LivePortrait's stitching module S: keeps the driven face's edge where the portrait's is, so the "
           "paste-back has no seam.", _NO_HASH),
)

GENERATOR = HubFile(
    name="live-portrait-generator",
    file="live_portrait_generator.onnx",
    urls=_urls("live_portrait_generator.onnx"),
    sha256=("db9274114fed504226c5921fc736b9558505e68682e7448631aea7b62cb3048a",),   # uwg mirror (facts §4a)
    inputs=(Tensor("feature_volume", FEATURE_VOLUME, "float32"),
            Tensor("source", POINTS, "float32"),    # the wanted (driven) keypoints
            Tensor("target", POINTS, "float32")),   # the keypoints of the crop the volume came from
    outputs=(Tensor(None, FACE_OUT, "float32"),),
    licence=_LICENCE,
    commercial=True,
    min_memory=GENERATOR_SIZE + GENERATOR_ACTIVATIONS,
    size=GENERATOR_SIZE,
    notes=("LivePortrait's warping module W and SPADE decoder G (45.53M + 55.37M params): the portrait's "
           "face redrawn at 512 px with the driven keypoints.",),
)

# In the order the pipeline uses them, as the tab lists them.
ENTRIES = {"Feature extractor": FEATURE_EXTRACTOR, "Motion extractor": MOTION_EXTRACTOR,
           "Stitcher": STITCHER, "Generator": GENERATOR}
ACTIVATIONS = {FEATURE_EXTRACTOR.name: FEATURE_ACTIVATIONS, MOTION_EXTRACTOR.name: MOTION_ACTIVATIONS,
               STITCHER.name: STITCHER_ACTIVATIONS, GENERATOR.name: GENERATOR_ACTIVATIONS}
