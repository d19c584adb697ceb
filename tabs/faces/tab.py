"""Faces: detect faces, compare two faces, and hide faces in images and videos (optionally all but
one person's), all with the one shared detector; identity comes from the one face embedder."""
from __future__ import annotations

import gradio as gr
import numpy as np

from ui.errors import user_errors
from ui.safety import gate_output
from ui.jobs import start_job
from engine import Engine, UserFacingError, pixel_bucket
from tabs.faces import anonymize
from analysers import face_detector
from analysers import face_identity
from analysers.face_detector import FACE_DETECTOR
from .draw import draw_faces

MODES = list(anonymize.MODES)
KEEP_HELP = ("Optional: a photo of one person (its largest face). Faces within distance "
             f"{face_identity.THRESHOLD} of it stay visible, all others are hidden; faces narrower "
             f"than {anonymize.MIN_KEEP_WIDTH} px are always hidden (too small to tell who it is).")



def _check_identity() -> None:
    reason = face_identity.unavailable_reason()
    if reason:
        raise gr.Error(f"Face identity is unavailable here. {reason}")


def _check_image(image, what: str) -> None:
    if image is None:
        raise gr.Error(f"Upload {what} first.")


def build(engine: Engine) -> None:
    max_pixels = engine.registry.get(FACE_DETECTOR).max_pixels

    def detect_faces(image: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """Find faces in an image.

        Args:
            image: the photo to search, RGB.

        Returns:
            The image with boxes and landmarks drawn, and JSON
            {"faces": [{"box": [x1, y1, x2, y2], "score": s, "landmarks": [[x, y] x5]}]}
            in input pixel coordinates.
        """
        if image is None:
            raise gr.Error("Upload an image first.")
        height, width = image.shape[:2]
        with user_errors("detect faces"):
            faces = engine.infer("detect_faces", FACE_DETECTOR,
                                 lambda model: face_detector.detect_faces(model, image),
                                 bucket=pixel_bucket(width, height))
        return gate_output(engine, draw_faces(image, faces)), {"faces": faces}

    def compare_faces(image_1: np.ndarray | None, image_2: np.ndarray | None) -> tuple[np.ndarray, dict]:
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
        _check_image(image_1, "photo 1")
        _check_image(image_2, "photo 2")
        _check_identity()
        width, height = max(image_1.shape[1], image_2.shape[1]), max(image_1.shape[0], image_2.shape[0])
        with user_errors("compare faces"), engine.run("compare_faces", bucket=pixel_bucket(width, height)) as run:
            found = []
            for index, image in enumerate((image_1, image_2), start=1):
                person = anonymize.person(run.call, image, max_pixels)
                if person is None:
                    raise gr.Error(f"No face found in photo {index}.")
                found.append(person)
            pairs = list(zip((image_1, image_2), found))
            chips = run.call(face_identity.FACE_EMBEDDER,
                             lambda embedder: [embedder.chips(i, [p["face"]], 200)[0] for i, p in pairs])
        distance = float(face_identity.distances(found[0]["embedding"][None], found[1]["embedding"])[0])
        result = {"distance": round(distance, 4), "same_person": distance < face_identity.THRESHOLD,
                  "threshold": face_identity.THRESHOLD}
        for index, p in enumerate(found, start=1):
            result[f"face_{index}"] = {"box": [round(float(v), 2) for v in p["face"]["box"]],
                                       "faces_in_photo": p["faces_in_photo"]}
        return gate_output(engine, np.concatenate(chips, axis=1)), result

    def blur_faces_image(image: np.ndarray | None, mode: str, keep: np.ndarray | None = None) -> np.ndarray:
        """Hide every face in an image, or every face but one person's.

        Args:
            image: the photo, RGB.
            mode: "blur" or "pixelate".
            keep: optional photo of a person to leave visible (its largest face is used). Faces
                closer than 0.6 to it stay as they are; every other face is hidden.

        Returns:
            The image with each detected face (but the kept person's) blurred or pixelated.
        """
        _check_image(image, "an image")
        if mode not in MODES:
            raise gr.Error(f"Mode must be one of {', '.join(MODES)}.")
        if keep is not None:
            _check_image(keep, "the photo of the person to keep")
            _check_identity()
        height, width = image.shape[:2]
        with user_errors("hide faces"), engine.run("blur_faces_image", bucket=pixel_bucket(width, height)) as run:
            reference = None
            if keep is not None:
                person = anonymize.person(run.call, keep, max_pixels)
                if person is None:
                    raise gr.Error("The photo of the person to keep shows no face.")
                reference = person["embedding"]
            hidden = anonymize.hide_in_frames(run.call, image[None], mode, max_pixels, reference)[0]
        return gate_output(engine, hidden)

    def blur_faces_video(video: str | None, mode: str, keep: str | None = None, progress=gr.Progress()) -> str:
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
        if not video:
            raise gr.Error("Upload a video first.")
        if mode not in MODES:
            raise gr.Error(f"Mode must be one of {', '.join(MODES)}.")
        inputs = {"video": video}
        if keep:
            _check_identity()
            try:  # an unreadable photo is refused now, not after the job has waited in the queue
                anonymize.read_photo(keep, "photo of the person to keep")
            except UserFacingError as exc:
                raise gr.Error(str(exc)) from exc
            inputs["reference"] = keep
        return start_job(engine, "blur_faces_video", {"mode": mode}, inputs, progress)

    identity_missing = face_identity.unavailable_reason()
    with gr.Tabs():
        with gr.Tab("Detect"):
            gr.Markdown("Every face gets a box, its score and five landmarks (eyes, nose, mouth corners). "
                        "The same detector serves every face feature.")
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="Photo", type="numpy", image_mode="RGB",
                                     sources=["upload", "clipboard"])
                    run = gr.Button("Detect faces", variant="primary")
                with gr.Column():
                    annotated = gr.Image(label="Faces found", type="numpy", format="png", interactive=False)
                    found = gr.JSON(label="Faces (JSON)")
            run.click(detect_faces, image, [annotated, found], api_name="detect_faces", concurrency_limit=2)
        with gr.Tab("Compare faces"):
            gr.Markdown("Is it the same person? The largest face of each photo is aligned and turned "
                        "into a 128-number embedding (dlib's ResNet); a distance below "
                        f"{face_identity.THRESHOLD} means the same person. Photos taken years apart, "
                        "in profile or with small faces are harder.")
            if identity_missing:
                gr.Markdown(f"**Face identity is unavailable here.** {identity_missing}")
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        first = gr.Image(label="Photo 1", type="numpy", image_mode="RGB",
                                         sources=["upload", "clipboard"])
                        second = gr.Image(label="Photo 2", type="numpy", image_mode="RGB",
                                          sources=["upload", "clipboard"])
                    compare = gr.Button("Compare", variant="primary")
                with gr.Column():
                    pair = gr.Image(label="The two faces compared", type="numpy", format="png",
                                    interactive=False)
                    verdict = gr.JSON(label="Result (JSON)")
            compare.click(compare_faces, [first, second], [pair, verdict], api_name="compare_faces",
                          concurrency_limit=2)
        with gr.Tab("Hide in a photo"):
            with gr.Row():
                with gr.Column():
                    photo = gr.Image(label="Photo", type="numpy", image_mode="RGB",
                                     sources=["upload", "clipboard"])
                    photo_mode = gr.Radio(MODES, value="blur", label="How to hide")
                    photo_keep = gr.Image(label="Keep this person visible (optional)", type="numpy",
                                          image_mode="RGB", sources=["upload", "clipboard"])
                    gr.Markdown(KEEP_HELP)
                    hide = gr.Button("Hide faces", variant="primary")
                hidden = gr.Image(label="Faces hidden", type="numpy", format="png", interactive=False)
            hide.click(blur_faces_image, [photo, photo_mode, photo_keep], hidden, api_name="blur_faces_image",
                       concurrency_limit=2)
        with gr.Tab("Hide in a video"):
            gr.Markdown("The video runs as a job: it survives a closed browser and a restart, and "
                        "shows on the Jobs tab. Every frame is searched; the sound is kept.")
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="Video", sources=["upload"])
                    video_mode = gr.Radio(MODES, value="blur", label="How to hide")
                    video_keep = gr.Image(label="Keep this person visible (optional)", type="filepath",
                                          sources=["upload", "clipboard"])
                    gr.Markdown(KEEP_HELP)
                    go = gr.Button("Hide faces in the video", variant="primary")
                result = gr.Video(label="Faces hidden", interactive=False)
            # Many videos may be queued: the job queue, not Gradio, decides what runs when.
            go.click(blur_faces_video, [video, video_mode, video_keep], result, api_name="blur_faces_video",
                     concurrency_limit=None)
