"""MTCNN (the shared face detector) and BlazeFace short / full range on the same real faces (issue 15).

Per detector: found / missed / false positives, median IoU of what was found, and the median time
per 720p frame, every detector on ONNX Runtime (MTCNN as the engine serves it: shrunk to its
spec's max_pixels, 960x540, and boxes scaled back; BlazeFace letterboxes any size to its input).

A face counts as found when a detection overlaps its reference box with IoU >= 0.5 (greedy, best
score first, one detection per face); every other detection is a false positive. References:

- LFW: skimage's lfw_subset, 100 face crops (25x25 gray, cut to the face: forehead to chin,
  cheek to cheek) and 100 non-face crops. Each crop is enlarged x4 (bicubic) and centred on a
  mid-gray canvas: "lfw_half" 200x200 (the face is half the image: a selfie), "lfw_quarter"
  400x400 (a quarter: a portrait); its reference box is the whole enlarged crop. Any detection
  on a non-face crop is a false positive. "lfw_720p_<n>px": the 100 faces enlarged to n px, on a
  grid (cells of 2n px) over 1280x720 gray frames. Beware: a bare face patch on gray has no head
  outline, hair or shoulders; BlazeFace, which looks at the whole frame at once, needs that context
  for small faces (alone at 80 px in a 720p frame full-range finds 1 of 20), MTCNN's local windows
  do not: the 720p sweep below, on whole photos, is the fairer test of distance.
- astronaut, camera (skimage): one face each, boxes marked by hand (hairline to chin, ear to ear).
- 720p sweep: the astronaut and camera photos shrunk so the face is 160, 80, 40 or 20 px wide,
  pasted on a 1280x720 frame (mid-gray), reference the hand box scaled likewise: which sizes each
  detector finds.
- No faces at all: skimage coffee, rocket, chelsea (a cat), gradio's bus.png (a cartoon bus icon
  of 61x68 px, not a street photo) and frames of gradio's videos (a.mp4: a text card; world.mp4:
  the night earth; neither shows a person).
"""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

MTCNN_MAX_PIXELS = 960 * 540  # analysers.face_detector.specs(): max_pixels
# Hand-marked reference boxes [x1, y1, x2, y2] (hairline to chin, ear to ear).
ASTRONAUT_FACE = [178.0, 70.0, 272.0, 178.0]
CAMERA_FACE = [195.0, 115.0, 262.0, 200.0]
SWEEP_WIDTHS = (160, 80, 40, 20)
TIMING_RUNS = 20


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(faces: list[dict], references: list[list[float]], threshold: float = 0.5) -> tuple[int, int, list[float]]:
    """(found, false positives, IoUs of the found) for one image, faces best score first."""
    left, ious, false = list(references), [], 0
    for face in faces:
        scored = [(iou(face["box"], ref), i) for i, ref in enumerate(left)]
        best = max(scored, default=(0.0, -1))
        if best[0] >= threshold:
            ious.append(best[0])
            left.pop(best[1])
        else:
            false += 1
    return len(ious), false, ious


def lfw_image(crop: np.ndarray, up: int = 4, pad: int = 50) -> tuple[np.ndarray, list[float]]:
    """A 25x25 [0, 1] crop enlarged and centred on a gray canvas, and its reference box."""
    side = crop.shape[0] * up
    face = Image.fromarray((crop * 255).round().astype(np.uint8)).resize((side, side), Image.BICUBIC)
    canvas = Image.new("L", (side + 2 * pad,) * 2, 128)
    canvas.paste(face, (pad, pad))
    return np.asarray(canvas.convert("RGB")), [float(pad), float(pad), float(pad + side), float(pad + side)]


def lfw_grid(crops: np.ndarray, size: int) -> list[tuple[np.ndarray, list[list[float]]]]:
    """The crops enlarged to `size` px, one per 2*size cell of 1280x720 frames, with their boxes."""
    cols, rows = 1280 // (2 * size), 720 // (2 * size)
    frames = []
    for start in range(0, len(crops), cols * rows):
        frame, refs = Image.new("L", (1280, 720), 128), []
        for k, crop in enumerate(crops[start:start + cols * rows]):
            x, y = (k % cols) * 2 * size + size // 2, (k // cols) * 2 * size + size // 2
            face = Image.fromarray((crop * 255).round().astype(np.uint8)).resize((size, size), Image.BICUBIC)
            frame.paste(face, (x, y))
            refs.append([float(x), float(y), float(x + size), float(y + size)])
        frames.append((np.asarray(frame.convert("RGB")), refs))
    return frames


def frame_720p(photo: np.ndarray, box: list[float], face_width: int) -> tuple[np.ndarray, list[float]]:
    """`photo` shrunk so the face in `box` is `face_width` px wide, centred on a 1280x720 frame."""
    scale = face_width / (box[2] - box[0])
    h, w = photo.shape[:2]
    small = Image.fromarray(photo).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    frame = Image.new("RGB", (1280, 720), (128, 128, 128))
    x0, y0 = (1280 - small.width) // 2, (720 - small.height) // 2
    frame.paste(small, (x0, y0))
    return np.asarray(frame), [x0 + box[0] * scale, y0 + box[1] * scale, x0 + box[2] * scale, y0 + box[3] * scale]


def video_frames(name: str, count: int = 4) -> list[np.ndarray]:
    """`count` frames spread over gradio's media_assets/videos/<name> (ffmpeg of imageio-ffmpeg)."""
    import gradio

    from engine.media.ffmpeg import ffmpeg_exe

    path = Path(gradio.__file__).parent / "media_assets" / "videos" / name
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", "fps=1/2,scale=640:-2",
                          "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frame_bytes = 640 * 360 * 3
    return [np.frombuffer(raw[i:i + frame_bytes], np.uint8).reshape(360, 640, 3)
            for i in range(0, len(raw) - frame_bytes + 1, frame_bytes)]


def negatives() -> dict[str, np.ndarray]:
    import gradio
    import skimage.data

    bus = Path(gradio.__file__).parent / "media_assets" / "images" / "bus.png"
    images = {"coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(), "chelsea": skimage.data.chelsea(),
              "bus": np.asarray(Image.open(bus).convert("RGB"))}
    for name in ("a.mp4", "world.mp4"):
        for i, frame in enumerate(video_frames(name)):
            images[f"{name}#{i}"] = frame
    return images


def detectors() -> dict:
    """name -> (detect(image) -> faces, load seconds), every net on ONNX Runtime."""
    from analysers import face_detector
    from analysers.blazeface import load_blazeface
    from tabs.faces.people import find_faces

    out = {}
    started = time.perf_counter()
    mtcnn = face_detector.load_mtcnn("cpu", accelerate="onnx")
    out["mtcnn"] = (lambda image: find_faces(mtcnn, image, MTCNN_MAX_PIXELS), time.perf_counter() - started)
    for variant in ("short", "full"):
        started = time.perf_counter()
        net = load_blazeface(variant, "cpu", "onnx")
        out[f"blazeface_{variant}"] = (net, time.perf_counter() - started)
    return out


def tally(detect, cases) -> dict:
    """found / missed / false positives and the median IoU of the found over (image, refs) cases."""
    found = false = total = 0
    ious = []
    for image, refs in cases:
        f, fp, i = match(detect(image), refs)
        found, false, total, ious = found + f, false + fp, total + len(refs), ious + i
    return {"found": found, "missed": total - found, "false": false,
            "median_iou": round(statistics.median(ious), 3) if ious else None}


def run(verbose: bool = True) -> dict:
    import skimage.data

    found_at = detectors()
    lfw = skimage.data.lfw_subset()
    astronaut, camera = skimage.data.astronaut(), skimage.data.camera()
    sweep = {(photo, w): frame_720p(image, box, w) for photo, image, box in
             (("astronaut", astronaut, ASTRONAUT_FACE), ("camera", np.dstack([camera] * 3), CAMERA_FACE))
             for w in SWEEP_WIDTHS}
    empty = negatives()
    result = {}
    for name, (detect, load_s) in found_at.items():
        row = {"load_s": round(load_s, 2)}
        for layout, pad in (("lfw_half", 50), ("lfw_quarter", 150)):
            cases = [lfw_image(crop, pad=pad) for crop in lfw[:100]]
            row[layout] = tally(detect, [(image, [ref]) for image, ref in cases])
            neg = [detect(lfw_image(crop, pad=pad)[0]) for crop in lfw[100:]]
            row[layout].update(false_on_nonfaces=sum(map(len, neg)),
                               nonface_false_max_score=max((f["score"] for n in neg for f in n), default=None))
        for size in (80, 40):
            row[f"lfw_720p_{size}px"] = tally(detect, lfw_grid(lfw[:100], size))
        for photo, image, ref in (("astronaut", astronaut, ASTRONAUT_FACE), ("camera", camera, CAMERA_FACE)):
            f, fp, i = match(detect(image), [ref])
            row[photo] = {"found": f, "false": fp, "iou": round(i[0], 3) if i else None}
        row["sweep_720p_found_px"] = {photo: [w for w in SWEEP_WIDTHS if match(detect(sweep[photo, w][0]),
                                                                                [sweep[photo, w][1]])[0]]
                                      for photo in ("astronaut", "camera")}
        row["sweep_720p_false"] = sum(match(detect(img), [ref])[1] for img, ref in sweep.values())
        row["false_on_empty_images"] = {k: n for k, img in empty.items() if (n := len(detect(img)))}
        row["empty_images"] = len(empty)
        result[name] = row
        if verbose:
            print(name, row, flush=True)
    times = time_720p(sweep["astronaut", 80][0], {name: detect for name, (detect, _) in found_at.items()})
    for name in found_at:
        result[name]["ms_per_720p_frame"] = times.pop(name)
    result.update(times, runs=TIMING_RUNS, runtime="onnxruntime (cpu)", iou_threshold=0.5)
    return result


def time_720p(frame: np.ndarray, detect: dict) -> dict:
    """Median ms per call on one 720p frame (a face of 80 px): the detectors on ONNX Runtime
    interleaved, so that all see the same load on the machine; then BlazeFace on eager torch in a
    phase of its own (interleaved with ONNX Runtime, whose idle threads keep spinning for a while
    after each run, eager torch measured 20-40x slower than alone)."""
    from analysers.blazeface import load_blazeface

    def medians(calls: dict) -> dict:
        for fn in calls.values():
            fn(frame)  # warm
        times = {name: [] for name in calls}
        for _ in range(TIMING_RUNS):
            for name, fn in calls.items():
                started = time.perf_counter()
                fn(frame)
                times[name].append(time.perf_counter() - started)
        return {name: round(statistics.median(runs) * 1000, 2) for name, runs in times.items()}

    out = medians(detect)
    eager = medians({v: load_blazeface(v, "cpu", None) for v in ("short", "full")})
    out.update({f"blazeface_{v}_eager_ms_per_720p_frame": ms for v, ms in eager.items()})
    return out
