"""Faces: detect faces, read each face's emotion, compare two faces, and hide faces in images and
videos (optionally all but one person's), all with the one shared detector; identity comes from the
one face embedder, emotion from the one emotion network."""
from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from analysers import face_detector, face_emotion, face_identity
from analysers.face_detector import FACE_DETECTOR
from engine import Engine, UserFacingError, pixel_bucket
from ui.components import (VIDEO_JOB_NOTE, image_output, on_click, on_click_queued, photo_input,
                           picture_and_json, picture_file_input, sub_tab, video_input, video_output, run_button)
from ui.jobs import start_job
from ui.safety import gate_output

from . import check
from .anonymize import MIN_KEEP_WIDTH, MODES, hide_in_frames
from .draw import draw_faces
from .people import compare as compare_largest_faces, find_faces, reference_embedding

KEEP_LABEL = "Keep this person visible (optional)"
KEEP_HELP = ("Optional: a photo of one person (its largest face). Faces within distance "
             f"{face_identity.THRESHOLD} of it stay visible, all others are hidden; faces narrower "
             f"than {MIN_KEEP_WIDTH} px are always hidden (too small to tell who it is).")


def _detector_pixels(engine: Engine) -> int | None:
    """The detector's size limit: larger pictures are searched on a shrunk copy."""
    return engine.registry.get(FACE_DETECTOR).max_pixels


def detect_faces(engine: Engine, image: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Find faces in an image.

    Args:
        image: the photo to search, RGB.

    Returns:
        The image with boxes and landmarks drawn, and JSON
        {"faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x5]}]}
        in input pixel coordinates.
    """
    check({}, {"image": image})
    height, width = image.shape[:2]
    faces = engine.infer("detect_faces", FACE_DETECTOR, lambda model: face_detector.detect_faces(model, image),
                         bucket=pixel_bucket(width, height))
    return gate_output(engine, draw_faces(image, faces)), {"faces": faces}


def face_emotions(engine: Engine, image: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Read the emotion on each face in a photo (7 classes: angry, disgust, fear, happy, sad,
    surprise, neutral).

    Args:
        image: the photo, RGB.

    Returns:
        The image with each face's box and top emotion drawn, and JSON
        {"faces": [{"box": [x1, y1, x2, y2], "score": s, "emotion": "happy", "probability": p,
        "emotions": {"angry": p, ..., "neutral": p}}]}, best detector score first, in input
        pixel coordinates. The network (fer's mini-XCEPTION, trained on FER-2013) reads smiles
        well; between neutral, sad, angry and fear on a serious face it is often unsure.
    """
    check({}, {"image": image})
    reason = face_emotion.unavailable_reason()
    if reason:
        raise UserFacingError(f"Facial emotion is unavailable here. {reason}")
    max_pixels = _detector_pixels(engine)
    height, width = image.shape[:2]
    with engine.run("face_emotions", bucket=pixel_bucket(width, height)) as run:
        faces = run.call(FACE_DETECTOR, lambda detector: find_faces(detector, image, max_pixels))
        read = face_emotion.emotions(run.call, image, [face["box"] for face in faces])
    found = [{"box": [round(float(v), 2) for v in face["box"]], "score": face["score"], "emotion": mood["top"],
              "probability": mood["score"], "emotions": mood["emotions"]}
             for face, mood in zip(faces, read) if mood is not None]
    return gate_output(engine, _draw_emotions(image, found)), {"faces": found}


def _draw_emotions(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """The photo with each face's box and its top emotion (with its probability) under the box."""
    canvas = Image.fromarray(face_detector.as_rgb(image).copy())
    draw = ImageDraw.Draw(canvas)
    line = max(1, round(min(canvas.size) / 200))  # strokes scale with the photo, as draw_faces'
    font = ImageFont.load_default(size=max(10, 6 * line))
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        draw.rectangle([x1, y1, x2, y2], outline=(255, 200, 0), width=line)
        label = f"{face['emotion']} {face['probability']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        # Under the box, or inside its bottom when the box touches the photo's bottom edge.
        height = bottom - top + 2 * line
        ty = y2 + line if y2 + line + height <= canvas.height else y2 - height - line
        draw.rectangle([x1, ty, x1 + right - left + 2 * line, ty + height], fill=(255, 200, 0))
        draw.text((x1 + line - left, ty + line - top), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def compare_faces(engine: Engine, image_1: np.ndarray | None,
                  image_2: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Are the faces in two photos the same person? Uses the largest face of each photo.

    Args:
        image_1: the first photo, RGB.
        image_2: the second photo, RGB.

    Returns:
        The two faces as the network saw them (aligned, side by side), and JSON
        {"distance": d, "same_person": d < 0.6, "threshold": 0.6,
         "face_1": {"box": [x1, y1, x2, y2], "faces_in_photo": n}, "face_2": {...}}.
        The distance is dlib's (Euclidean between 128-D embeddings): the same person is
        usually below 0.6, two people above it.
    """
    check({}, {"image_1": image_1, "image_2": image_2})
    width, height = max(image_1.shape[1], image_2.shape[1]), max(image_1.shape[0], image_2.shape[0])
    with engine.run("compare_faces", bucket=pixel_bucket(width, height)) as run:
        pair, result = compare_largest_faces(run.call, image_1, image_2, _detector_pixels(engine))
    return gate_output(engine, pair), result


def blur_faces_image(engine: Engine, image: np.ndarray | None, mode: str,
                     keep: np.ndarray | None = None) -> np.ndarray:
    """Hide every face in an image, or every face but one person's.

    Args:
        image: the photo, RGB.
        mode: "blur" or "pixelate".
        keep: optional photo of a person to leave visible (its largest face is used). Faces
            closer than 0.6 to it stay as they are; every other face is hidden.

    Returns:
        The image with each detected face (but the kept person's) blurred or pixelated.
    """
    check({"mode": mode}, {"image": image, "reference": keep})
    max_pixels = _detector_pixels(engine)
    height, width = image.shape[:2]
    with engine.run("blur_faces_image", bucket=pixel_bucket(width, height)) as run:
        reference = None if keep is None else reference_embedding(run.call, keep, max_pixels)
        hidden = hide_in_frames(run.call, image[None], mode, max_pixels, reference)[0]
    return gate_output(engine, hidden)


def blur_faces_video(engine: Engine, video: str | None, mode: str, keep: str | None = None,
                     progress=gr.Progress()) -> str:
    """Hide every face in a video, or every face but one person's; the audio is kept.
    Runs as a job on the queue.

    Args:
        video: the video file.
        mode: "blur" or "pixelate".
        keep: optional photo of a person to leave visible (its largest face is used). Faces
            closer than 0.6 to it stay as they are; every other face is hidden.

    Returns:
        The processed video (H.264 MP4, same frames, fps and audio).
    """
    inputs = {"video": video, **({"reference": keep} if keep else {})}
    return start_job(engine, "blur_faces_video", {"mode": mode}, inputs, progress)


def build(engine: Engine) -> None:
    identity_missing = face_identity.unavailable_reason()
    emotion_missing = face_emotion.unavailable_reason()
    with gr.Tabs():
        with sub_tab("Detect", "Every face gets a box, its score and five landmarks (eyes, nose, mouth corners). "
                     "The same detector serves every face feature. On 39 real photos it found all 21 "
                     "faces and put 3 small boxes on the background (a lamp, a rock, a light)."):
            with gr.Column():
                image = photo_input("Photo")
                run = run_button("Detect faces")
            annotated, found = picture_and_json("Faces found", "Faces (JSON)")
            on_click(engine, run, detect_faces, "detect faces", image, [annotated, found], api_name="detect_faces")
        with sub_tab("Emotion", "Each face's emotion: angry, disgust, fear, happy, sad, surprise or neutral "
                     "(fer's mini-XCEPTION on the detector's faces). Smiles are read well; serious faces "
                     "are often called sad, angry or afraid."):
            with gr.Column():
                mood_photo = photo_input("Photo")
                if emotion_missing:
                    gr.Markdown(f"**Facial emotion is unavailable here.** {emotion_missing}")
                read = run_button("Read emotions")
            moods, moods_json = picture_and_json("Emotions", "Emotions (JSON)")
            on_click(engine, read, face_emotions, "read emotions", mood_photo, [moods, moods_json],
                     api_name="face_emotions")
        with gr.Tab("Compare faces"):
            gr.Markdown("Is it the same person? The largest face of each photo is aligned and turned "
                        "into a 128-number embedding (dlib's ResNet); a distance below "
                        f"{face_identity.THRESHOLD} means the same person. On real photos and video "
                        f"frames about {face_identity.THRESHOLD_FRR:.0%} of same-person pairs came out above "
                        f"it (a hand over the face) and {face_identity.THRESHOLD_FAR:.1%} of two-person "
                        "pairs below it. Photos taken years apart, in profile or with small faces are harder.")
            if identity_missing:
                gr.Markdown(f"**Face identity is unavailable here.** {identity_missing}")
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        first = photo_input("Photo 1")
                        second = photo_input("Photo 2")
                    compare = run_button("Compare")
                pair, verdict = picture_and_json("The two faces compared", "Result (JSON)")
            on_click(engine, compare, compare_faces, "compare faces", [first, second], [pair, verdict],
                     api_name="compare_faces")
        with sub_tab("Hide in a photo"):
            with gr.Column():
                photo = photo_input("Photo")
                photo_mode = gr.Radio(list(MODES), value="blur", label="How to hide")
                photo_keep = photo_input(KEEP_LABEL)
                gr.Markdown(KEEP_HELP)
                hide = run_button("Hide faces")
            hidden = image_output("Faces hidden")
            on_click(engine, hide, blur_faces_image, "hide faces", [photo, photo_mode, photo_keep], hidden,
                     api_name="blur_faces_image")
        with sub_tab("Hide in a video", f"{VIDEO_JOB_NOTE} Every frame is searched; the sound is kept."):
            with gr.Column():
                video = video_input()
                video_mode = gr.Radio(list(MODES), value="blur", label="How to hide")
                video_keep = picture_file_input(KEEP_LABEL)
                gr.Markdown(KEEP_HELP)
                go = run_button("Hide faces in the video")
            result = video_output("Faces hidden")
            on_click_queued(engine, go, blur_faces_video, "hide faces in the video",
                            [video, video_mode, video_keep], result, api_name="blur_faces_video")
