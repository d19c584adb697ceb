"""Bad input on every endpoint (issue 9, item 1).

The real app is started once and every registered API endpoint that takes a file is found with
`view_api`, so a new tab is walked without touching this file. Each file parameter gets a
catalogue of bad and unusual files made here: empty, truncated, the wrong type under a right
looking name, decompression bombs, 1 px and 1 px thin images, CMYK / 16-bit / RGBA / palette
images, WAVs with no samples or odd rates and channels, an MP4 with no video stream and MP4s cut
in half. Every answer must be a correct result or a short plain message (a gr.Error): never a
traceback, a bare "Error", a Python exception name, a server path, a hang or a dead server.

What is expected, per class of input:
* refused (a message, never a result): empty files, truncated images, text under an image, audio
  or video name, decompression bombs, and for a video input an MP4 with no video stream;
* answered (a result wherever the endpoint answers a normal file, checked for correctness):
  CMYK, 16-bit, RGBA and palette images (they are the test photo in another encoding), WAVs at
  8 kHz stereo and 96 kHz 6 channels, and an audio-only MP4 given to an audio endpoint;
* either, per endpoint (RESULT_FOR_TINY says which must answer): 1 px and thin images, a WAV
  with zero samples, an MP4 cut in half.
The counts per class are printed at the end of the module.
"""
from __future__ import annotations

import collections
import io
import re
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import soundfile
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_process import start_app, stop_app
from engine.media.video import ffmpeg_exe
from video_helpers import make_test_video

CALL_TIMEOUT_S = 180      # one answer; longer is a hang
MAX_MESSAGE = 300         # characters a user reads at a glance

IMAGE = "image"
VIDEO = "video"
MEDIA = "media"           # a gr.File that takes audio or video
EDITOR = "editor"         # gr.ImageEditor: a picture under painted layers
KIND_OF = {"Image": IMAGE, "Video": VIDEO, "File": MEDIA, "Audio": MEDIA, "ImageEditor": EDITOR}

REFUSE, ANSWER, EITHER = "refused", "answered", "either"

# Endpoints that answer a 1 px or a 1 px wide image with a result rather than a message: the
# capability works at any size (an image with no face has no faces, a score is a score, 1 px
# scales to 2 px). The others may say the image is too small (OCR, style transfer and background
# removal need a minimum size; comparing faces needs a face).
RESULT_FOR_TINY = {("detect_faces", "image"), ("nsfw_check", "image"), ("upscale", "image"),
                   ("blur_faces_image", "image"), ("face_emotions", "image"),
                   ("clean_up_photo", "image")}

# Inputs read for their metadata only (PNG text chunks), never decoded: a bomb's header and
# text are read safely, so a result is a correct answer there too.
METADATA_ONLY = {("png_info", "file")}

# Other arguments an endpoint needs for a file parameter to be used at all. Any other required
# argument gets view_api's example value (a choice of a radio, "Hello!!" for text).
OVERRIDES = {
    ("remove_background", "background"): {"mode": "image"},
    ("remove_background_video", "background"): {"mode": "image"},
    ("stylize", "style_image"): {"style": "from image"},
    ("stylize_video", "style_image"): {"style": "from image"},
}
# Endpoints that take no file (job control, status, text in, model management) are not walked.


@dataclass(frozen=True)
class Case:
    name: str        # shown in failures
    cls: str         # the class counted in the summary
    path: str
    expect: str      # REFUSE, ANSWER or EITHER
    size: tuple[int, int] | None = None   # (width, height) of a decodable image
    photo: bool = False                   # the test photo (one face, safe) in another encoding


# ----------------------------------------------------------------------------- the catalogue

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, width: int, height: int, rows: int | None = None) -> str:
    """A gray PNG declaring width x height, its rows all zeros: a few hundred KiB on disk that
    decode to width * height bytes. rows limits how many rows are really stored (the rest cut)."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(height if rows is None else rows))
    body += packer.flush() if rows is None else packer.flush(zlib.Z_SYNC_FLUSH)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
                     + (_png_chunk(b"IEND", b"") if rows is None else b""))
    return str(path)


def image_cases(folder: Path, photo: np.ndarray) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    height, width = photo.shape[:2]

    def saved(name: str, image: Image.Image, **options) -> str:
        image.save(folder / name, **options)
        return str(folder / name)

    rgb = Image.fromarray(photo)
    png, jpeg = io.BytesIO(), io.BytesIO()
    rgb.save(png, "PNG")
    rgb.save(jpeg, "JPEG", quality=90)
    (folder / "empty.png").write_bytes(b"")
    (folder / "half.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "half.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "text.png").write_text("this is not a picture\n")
    (folder / "text.jpg").write_text("this is not a picture either\n")
    alpha = np.full((height, width), 255, np.uint8)
    alpha[: height // 8] = 0                      # a transparent band over the sky
    gray16 = (np.asarray(rgb.convert("L"), np.uint16) * 257)
    sixteen = Image.fromarray(gray16)
    assert sixteen.mode == "I;16"
    cases = [
        Case("empty .png", "empty file", str(folder / "empty.png"), REFUSE),
        Case("PNG cut in half", "truncated image", str(folder / "half.png"), REFUSE),
        Case("JPEG cut in half", "truncated image", str(folder / "half.jpg"), REFUSE),
        Case("text named .png", "wrong type (text)", str(folder / "text.png"), REFUSE),
        Case("text named .jpg", "wrong type (text)", str(folder / "text.jpg"), REFUSE),
        # 30000 x 30000 is over twice PIL's limit: PIL itself refuses to open it.
        Case("PNG declaring 30000x30000", "decompression bomb",
             bomb_png(folder / "bomb30k.png", 30000, 30000, rows=64), REFUSE),
        # 12000 x 12000 (144 MP, 144 KiB on disk) is between PIL's warning and its error: only
        # our own cap stops it from being decoded (432 MB once made RGB).
        Case("PNG of 12000x12000 zeros", "decompression bomb", bomb_png(folder / "bomb12k.png", 12000, 12000),
             REFUSE),
        Case("1x1 PNG", "1 px image", saved("one.png", Image.new("RGB", (1, 1), (200, 120, 40))), EITHER,
             size=(1, 1)),
        Case("1x4000 PNG", "thin image", saved("tall.png", rgb.resize((1, 4000))), EITHER, size=(1, 4000)),
        Case("4000x1 PNG", "thin image", saved("wide.png", rgb.resize((4000, 1))), EITHER, size=(4000, 1)),
        Case("CMYK JPEG", "CMYK JPEG", saved("cmyk.jpg", rgb.convert("CMYK"), quality=92), ANSWER,
             size=(width, height), photo=True),
        Case("16-bit gray PNG", "16-bit PNG", saved("gray16.png", sixteen), ANSWER, size=(width, height), photo=True),
        Case("RGBA PNG", "RGBA PNG", saved("rgba.png", Image.fromarray(np.dstack([photo, alpha]))), ANSWER,
             size=(width, height), photo=True),
        Case("palette PNG", "palette PNG", saved("palette.png", rgb.quantize(256)), ANSWER,
             size=(width, height), photo=True),
    ]
    assert Image.open(cases[-1].path).mode == "P" and Image.open(cases[-3].path).mode == "I;16"
    assert Image.open(cases[-4].path).mode == "CMYK"
    return cases


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


def resample(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    times = np.arange(int(len(samples) * new_rate / rate)) / new_rate
    return np.interp(times, np.arange(len(samples)) / rate, samples).astype(np.float32)


def media_cases(folder: Path, speech: str) -> tuple[list[Case], list[Case]]:
    """(cases for a gr.File that takes audio or video, cases for a gr.Video)."""
    folder.mkdir(parents=True, exist_ok=True)
    samples, rate = soundfile.read(speech, dtype="float32")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio\n")
    (folder / "text.mp4").write_text("this is not a video\n")
    soundfile.write(folder / "no_samples.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    low = resample(samples, rate, 8000)
    soundfile.write(folder / "8k_stereo.wav", np.stack([low, 0.7 * low], axis=1), 8000, subtype="PCM_16")
    high = resample(samples, rate, 96000)
    soundfile.write(folder / "96k_6ch.wav", np.stack([high * g for g in (1, .8, .6, .5, .4, .3)], axis=1),
                    96000, subtype="PCM_16")
    ffmpeg("-i", speech, "-c:a", "aac", "-b:a", "64k", str(folder / "audio_only.mp4"))
    # A video with sound whose moov atom comes first (faststart): its first half still decodes.
    whole = make_test_video(folder / "whole_fast.mp4", frames=50, width=96, height=64, audio=True)
    data = whole.read_bytes()
    (folder / "half_fast.mp4").write_bytes(data[: len(data) // 2])
    # The same with the index at the end, as most cameras write it: half of it has no index.
    ffmpeg("-i", str(whole), "-c", "copy", str(folder / "whole_tail.mp4"))
    data = (folder / "whole_tail.mp4").read_bytes()
    (folder / "half_tail.mp4").write_bytes(data[: len(data) // 2])
    Image.fromarray(skimage.data.astronaut()[::8, ::8]).save(folder / "picture.png")
    (folder / "picture.wav").write_bytes((folder / "picture.png").read_bytes())

    def case(name, cls, file, expect):
        return Case(name, cls, str(folder / file), expect)

    media = [
        case("empty .wav", "empty file", "empty.wav", REFUSE),
        case("empty .mp4", "empty file", "empty.mp4", REFUSE),
        case("text named .wav", "wrong type (text)", "text.wav", REFUSE),
        case("text named .mp4", "wrong type (text)", "text.mp4", REFUSE),
        case("PNG named .wav", "wrong type (image)", "picture.wav", REFUSE),
        case("WAV with zero samples", "WAV no samples", "no_samples.wav", EITHER),
        case("WAV 8 kHz stereo", "WAV 8 kHz stereo", "8k_stereo.wav", ANSWER),
        case("WAV 96 kHz 6 channels", "WAV 96 kHz 6 ch", "96k_6ch.wav", ANSWER),
        case("MP4 with sound only", "MP4 audio only", "audio_only.mp4", ANSWER),
        case("MP4 (faststart) cut in half", "MP4 cut in half", "half_fast.mp4", EITHER),
        case("MP4 (index at end) cut in half", "MP4 cut in half", "half_tail.mp4", EITHER),
    ]
    video = [
        case("empty .mp4", "empty file", "empty.mp4", REFUSE),
        case("text named .mp4", "wrong type (text)", "text.mp4", REFUSE),
        case("MP4 with sound only", "MP4 audio only", "audio_only.mp4", REFUSE),
        case("MP4 (faststart) cut in half", "MP4 cut in half", "half_fast.mp4", EITHER),
        case("MP4 (index at end) cut in half", "MP4 cut in half", "half_tail.mp4", EITHER),
    ]
    return media, video


# ----------------------------------------------------------------------------- answers

_CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b|\b(Traceback|errno|Errno)\b")


def message_problem(text: str) -> str | None:
    """Why a gr.Error text is not a plain message a user understands; None when it is."""
    stripped = (text or "").strip()
    if not stripped:
        return "empty message"
    if stripped.rstrip(".!").lower() in ("error", "an error occurred", "internal server error"):
        return "a bare 'Error'"
    if len(stripped) > MAX_MESSAGE:
        return f"{len(stripped)} characters long"
    if found := _CLASS_NAME.search(stripped):
        return f"names {found[0]!r}"
    if "/tmp/" in stripped or "site-packages" in stripped or 'File "' in stripped:
        return "shows a server path"
    return None


def image_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def first_file(value):
    if isinstance(value, dict):
        return value.get("video") or value.get("path")
    return value


def check_result(endpoint: str, param: str, case: Case, result, size, photo: np.ndarray) -> str | None:
    """Is this a correct answer to `case` given to `param`? None when it is; else what is wrong.
    size: (width, height) of the picture the output follows (the case's own when it is the main
    input, else the good test photo's); photo: the good test photo as RGB."""
    try:
        if endpoint == "detect_faces":
            annotated, found = result
            if size and image_size(annotated) != size:
                return f"annotated image is {image_size(annotated)}, the input {size}"
            if case.photo and len(found["faces"]) != 1:
                return f"{len(found['faces'])} faces found in the test photo, want 1"
        elif endpoint == "nsfw_check":
            score = result["nsfw"]
            if not 0.0 <= score <= 1.0:
                return f"score {score}"
            if case.photo and score > 0.5:
                return f"the safe test photo scores {score}"
        elif endpoint == "upscale":
            if size and image_size(result) != (2 * size[0], 2 * size[1]):
                return f"x2 result is {image_size(result)} for {size}"
        elif endpoint in ("blur_faces_image", "stylize", "clean_up_photo"):
            if size and image_size(result) != size:
                return f"result is {image_size(result)}, the input {size}"
            if endpoint == "blur_faces_image" and param == "keep" and case.photo:
                # The person to keep is the photo's own face in another encoding: nothing is hidden.
                changed = np.abs(np.asarray(Image.open(result).convert("RGB"), int) - photo).mean()
                if changed > 1:
                    return f"the kept person was hidden (mean change {changed:.1f})"
        elif endpoint == "remove_background":
            cut, mask = result
            if size and (image_size(cut) != size or image_size(mask) != size):
                return f"result {image_size(cut)}, mask {image_size(mask)}, input {size}"
        elif endpoint == "ocr":
            annotated, found = result
            if size and image_size(annotated) != size:
                return f"annotated image is {image_size(annotated)}, the input {size}"
            if not isinstance(found["lines"], list):
                return "no lines list"
        elif endpoint == "compare_faces":
            _, verdict = result
            if case.photo and verdict["same_person"] is not True:
                return f"the test photo in another encoding is not the same person: {verdict}"
        elif endpoint == "transcribe":
            text, transcript, srt, vtt, _ = result
            if not isinstance(text, str) or not Path(srt).is_file():
                return "no text or SRT"
            if case.expect == ANSWER and "fox" not in text.lower():
                return f"the sentence was not read back: {text!r}"
        elif endpoint == "detect_speech":
            _, found = result
            if case.expect == ANSWER and not found["segments"]:
                return "no speech found in speech"
        elif endpoint == "pitch":
            _, found = result
            if case.expect == ANSWER and found["median_hz"] is None:
                return "no pitch found in speech"
        elif endpoint == "denoise":
            wav, _ = result
            if soundfile.info(wav).frames == 0 and case.expect == ANSWER:
                return "an empty result"
        elif endpoint == "compare_voices":
            if not -1.0 <= result["similarity"] <= 1.0:
                return f"similarity {result['similarity']}"
        elif endpoint == "diarize":
            found, _ = result
            if not isinstance(found["segments"], list):
                return "no segments list"
        elif result is None:
            return "no result"
        elif isinstance(result, str) and not Path(result).exists() and endpoint.endswith("_video"):
            return "the result file is missing"
        else:
            video = first_file(result)
            if endpoint.endswith("_video") and isinstance(video, str) and Path(video).stat().st_size == 0:
                return "an empty video"
    except Exception as exc:  # a result of the wrong shape is a failure, not a crash of the test
        return f"unexpected result {result!r:.200} ({exc!r:.100})"
    return None


@dataclass
class Outcome:
    endpoint: str
    param: str
    case: Case
    answer: str          # "result", "message", "timeout", "crash"
    detail: str          # the message, or what went wrong
    problem: str | None  # why this outcome fails the test; None when it is fine
    seconds: float


def call(client: Client, endpoint: str, arguments: dict):
    """(answer, value or message, seconds) of one call, never waiting over CALL_TIMEOUT_S."""
    started = time.monotonic()
    job = client.submit(**arguments, api_name=f"/{endpoint}")
    try:
        value = job.result(timeout=CALL_TIMEOUT_S)
        return "result", value, time.monotonic() - started
    except AppError as exc:
        return "message", str(exc), time.monotonic() - started
    except TimeoutError:
        try:
            job.cancel()
        except Exception:  # a server that hangs may not answer this either; the hang is the finding
            pass
        return "timeout", f"no answer in {CALL_TIMEOUT_S} s", time.monotonic() - started
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {exc}"[:300], time.monotonic() - started


# ----------------------------------------------------------------------------- the walk

@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    proc, url = start_app(folder)
    try:
        yield proc, Client(url, verbose=False), proc.log_path
    finally:
        stop_app(proc)


_IMAGE_TYPES = {"image", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def file_types(config: dict) -> dict[str, list[list[str] | None]]:
    """api name -> the file_types of each input of that event (None for non-File inputs)."""
    props = {c["id"]: c for c in config["components"]}
    found = {}
    for dep in config["dependencies"]:
        if dep.get("api_name"):
            inputs = [props.get(i, {}) for i in dep["inputs"]]
            found[dep["api_name"]] = [c.get("props", {}).get("file_types") if c.get("type") == "file" else None
                                      for c in inputs if c.get("type") != "state"]
    return found


def file_parameters(endpoint: dict, types: list | None) -> list[tuple[str, str, bool, list | None]]:
    """(name, kind, required, file types) of each parameter that takes a file. A gr.File limited
    to image types is walked with the image catalogue; any other gr.File with audio and video."""
    params = []
    for index, p in enumerate(endpoint["parameters"]):
        kind = KIND_OF.get(p["component"])
        if kind is None:
            continue
        accepted = types[index] if types and index < len(types) else None
        if kind == MEDIA and accepted and {t.lower() for t in accepted} <= _IMAGE_TYPES:
            kind = IMAGE
        params.append((p["parameter_name"], kind, not p["parameter_has_default"], accepted))
    return params


def other_arguments(endpoint: dict) -> dict:
    """Example values for the required arguments that are not files."""
    return {p["parameter_name"]: p.get("example_input") for p in endpoint["parameters"]
            if p["component"] not in KIND_OF and not p["parameter_has_default"]}


def allowed(path: str, accepted: list | None) -> bool:
    """Whether a gr.File's file_types let this file in (by extension, as Gradio checks)."""
    extensions = [t.lower() for t in accepted or [] if t.startswith(".")]
    return not extensions or len(extensions) < len(accepted) or Path(path).suffix.lower() in extensions


def upload(kind: str, path: str, many: bool = False):
    """The value a client sends for one file: a list of it where the input takes several files."""
    if many:
        return [upload(kind, path)]
    if kind == EDITOR:
        return {"background": handle_file(path), "layers": [], "composite": None}
    return handle_file(path)


@pytest.fixture(scope="module")
def walk(app, tmp_path_factory, request):
    proc, client, app_log = app
    folder = tmp_path_factory.mktemp("bad")
    progress = (folder / "walk.log").open("w")   # one line per call, to follow a long walk
    photo = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256), Image.LANCZOS))
    good_image = str(folder / "photo.png")
    Image.fromarray(photo).save(good_image)
    speech = client.predict("The quick brown fox jumps over the lazy dog.", 1.0, api_name="/speak")
    good_video = str(make_test_video(folder / "good.mp4", frames=12, width=96, height=64, audio=True))
    good = {IMAGE: good_image, EDITOR: good_image, VIDEO: good_video, MEDIA: speech}
    media, video = media_cases(folder / "media", speech)
    catalogue = {IMAGE: image_cases(folder / "images", photo), VIDEO: video, MEDIA: media}
    catalogue[EDITOR] = catalogue[IMAGE]

    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    accepted = file_types(client.config)
    outcomes, skipped, baselines, baseline_problems = [], [], {}, []

    def summary():
        rows = collections.OrderedDict()
        for o in outcomes:
            row = rows.setdefault(o.case.cls, collections.Counter())
            row["tried"] += 1
            row[o.answer] += 1
            row["failed"] += o.problem is not None
        lines = ["", "Bad inputs per class (all endpoints and file parameters):",
                 f"{'class':<22}{'tried':>7}{'result':>8}{'message':>9}{'timeout':>9}{'crash':>7}{'failed':>8}"]
        for cls, row in rows.items():
            lines.append(f"{cls:<22}{row['tried']:>7}{row['result']:>8}{row['message']:>9}"
                         f"{row['timeout']:>9}{row['crash']:>7}{row['failed']:>8}")
        total = collections.Counter()
        for row in rows.values():
            total.update(row)
        lines.append(f"{'all':<22}{total['tried']:>7}{total['result']:>8}{total['message']:>9}"
                     f"{total['timeout']:>9}{total['crash']:>7}{total['failed']:>8}")
        walked = sorted({o.endpoint for o in outcomes})
        lines.append(f"endpoints walked ({len(walked)}): {', '.join(walked)}")
        lines.append(f"endpoints without a file input, not walked: {', '.join(skipped)}")
        no_baseline = [f"{e}.{p}: {v}" for (e, p), (a, v) in baselines.items() if a != "result"]
        if no_baseline:
            lines.append("file inputs whose good file got no result (only messages required): "
                         + "; ".join(no_baseline))
        slow = sorted(outcomes, key=lambda o: -o.seconds)[:3]
        lines.append("slowest answers: " + ", ".join(f"{o.endpoint}.{o.param} {o.case.name} {o.seconds:.1f} s"
                                                     for o in slow))
        lines.append(f"walk log: {folder / 'walk.log'}; app log: {app_log}")
        text = "\n".join(lines)
        progress.close()
        (Path(request.config.rootpath) / ".pytest_cache").mkdir(exist_ok=True)
        (Path(request.config.rootpath) / ".pytest_cache" / "bad_inputs_summary.txt").write_text(text + "\n")
        capture = request.config.pluginmanager.getplugin("capturemanager")
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        with capture.global_and_fixture_disabled():
            reporter.write_line(text)

    request.addfinalizer(summary)   # the counts are printed even when the walk breaks off

    for route, info in api.items():
        endpoint = route.lstrip("/")
        params = file_parameters(info, accepted.get(endpoint))
        if not params:
            skipped.append(endpoint)
            continue
        many = {p["parameter_name"] for p in info["parameters"]
                if str(p.get("python_type", {}).get("type", "")).lower().startswith("list[")}
        for name, kind, _, accepted_here in params:
            base = {**other_arguments(info),
                    **{n: upload(k, good[k], n in many) for n, k, required, _ in params if required and n != name}}
            base.update(OVERRIDES.get((endpoint, name), {}))
            answer, value, _ = call(client, endpoint, {**base, name: upload(kind, good[kind], name in many)})
            baselines[(endpoint, name)] = (answer, value if answer != "result" else None)
            if answer != "result" and (answer != "message" or message_problem(value)):
                baseline_problems.append(f"{endpoint}.{name} <- a good file: {answer} {str(value)[:200]!r}")
            print(f"{endpoint}.{name} <- a good file: {answer}", file=progress, flush=True)
            capable = answer == "result"
            for case in catalogue[kind]:
                answer, value, seconds = call(client, endpoint, {**base, name: upload(kind, case.path, name in many)})
                problem = None
                if answer in ("timeout", "crash"):
                    problem = value
                elif answer == "message":
                    problem = message_problem(value)
                    must_answer = (case.expect == ANSWER or (
                        case.cls in ("1 px image", "thin image") and (endpoint, name) in RESULT_FOR_TINY)
                    ) and allowed(case.path, accepted_here)   # Gradio refuses a type the input does not take
                    if problem is None and capable and must_answer:
                        problem = "refused a valid input the endpoint can answer"
                elif case.expect == REFUSE and not (case.cls == "decompression bomb"
                                                    and (endpoint, name) in METADATA_ONLY):
                    problem = "gave a result for a file it must refuse"
                else:
                    size = case.size if name == params[0][0] else photo.shape[1::-1]
                    problem = check_result(endpoint, name, case, value, size, photo)
                detail = value if answer != "result" else ""
                outcomes.append(Outcome(endpoint, name, case, answer, detail, problem, seconds))
                print(f"{endpoint}.{name} <- {case.name}: {answer} {seconds:.1f} s {str(detail)[:200]!r}"
                      f"{' FAIL ' + problem if problem else ''}", file=progress, flush=True)
    healthy = proc.poll() is None
    return {"outcomes": outcomes, "healthy": healthy, "baselines": baselines, "skipped": skipped,
            "baseline_problems": baseline_problems,
            "client": client, "proc": proc, "photo": photo}


def failures(outcomes, predicate=lambda o: True) -> list[str]:
    return [f"{o.endpoint}.{o.param} <- {o.case.name}: {o.answer} {o.detail[:160]!r}: {o.problem}"
            for o in outcomes if o.problem and predicate(o)]


def test_every_file_endpoint_is_walked(walk):
    walked = {o.endpoint for o in walk["outcomes"]}
    # The capabilities this test was written against; a new one is walked without being listed.
    for name in ("detect_faces", "compare_faces", "blur_faces_image", "blur_faces_video", "remove_background",
                 "stylize", "upscale", "upscale_video", "ocr", "ocr_video", "nsfw_check", "transcribe",
                 "detect_speech", "cut_silence", "denoise", "pitch", "compare_voices", "diarize"):
        assert name in walked
    assert not walked & {"list_jobs", "cancel_job", "retry_job", "system_status", "doctor"}


def test_good_files_get_a_result_or_a_plain_reason(walk):
    # A capability that cannot run here (no model added yet) says so; that is its answer to
    # every file, and only its messages are then checked.
    assert not walk["baseline_problems"], "\n".join(walk["baseline_problems"])


def test_no_call_hangs_or_breaks_the_connection(walk):
    bad = failures(walk["outcomes"], lambda o: o.answer in ("timeout", "crash"))
    assert not bad, "\n".join(bad)


def test_bad_files_get_a_short_plain_message(walk):
    bad = failures(walk["outcomes"], lambda o: o.case.expect == REFUSE)
    assert not bad, "\n".join(bad)


def test_every_message_is_plain(walk):
    bad = failures(walk["outcomes"], lambda o: o.answer == "message")
    assert not bad, "\n".join(bad)


def test_unusual_but_valid_files_get_correct_answers(walk):
    bad = failures(walk["outcomes"], lambda o: o.case.expect != REFUSE)
    assert not bad, "\n".join(bad)


def test_the_server_still_serves_after_the_walk(walk, tmp_path):
    assert walk["healthy"], "the app process died during the walk"
    client = walk["client"]
    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astronaut.png")
    _, found = client.predict(handle_file(str(tmp_path / "astronaut.png")), api_name="/detect_faces")
    assert len(found["faces"]) == 1
    assert walk["proc"].poll() is None
