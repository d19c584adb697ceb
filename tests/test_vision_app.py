"""The vision endpoints through the real app and gradio_client, and the public-link NSFW gate."""
import numpy as np
import pytest
import skimage.data
from gradio_client import handle_file
from PIL import Image, ImageDraw, ImageFont

from app_process import app_client


def save(array, path):
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    # Threshold 0: every image output is hidden, as a shared app would hide a high-scoring one.
    with app_client(tmp_path_factory.mktemp("data"), "--nsfw-gate", "on", "--nsfw-threshold", "0") as client:
        yield client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with app_client(tmp_path_factory.mktemp("data")) as client:
        yield client


def text_image(path):
    image = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(image).text((20, 50), "Wimmel reads text", fill="black", font=ImageFont.load_default(size=48))
    image.save(path)
    return str(path)


def test_ocr_nsfw_and_stylize_answer_through_the_api(client, tmp_path):
    _, result = client.predict(handle_file(text_image(tmp_path / "t.png")), api_name="/ocr")
    assert [line["text"] for line in result["lines"]] == ["Wimmel reads text"]
    assert client.predict(handle_file(save(skimage.data.astronaut(), tmp_path / "a.png")),
                          api_name="/nsfw_check")["nsfw"] < 0.2
    styled = np.asarray(Image.open(client.predict(handle_file(save(skimage.data.chelsea(), tmp_path / "c.png")),
                                                  "style 3", None, api_name="/stylize")))
    assert styled.shape == skimage.data.chelsea().shape
    assert np.abs(styled.astype(int) - skimage.data.chelsea().astype(int)).mean() > 10
    small = skimage.data.astronaut()[::8, ::8]  # 64 px: the CPU upscaler takes seconds per 512 px
    bigger = np.asarray(Image.open(client.predict(handle_file(save(small, tmp_path / "s.png")), 2, "fast",
                                                  api_name="/upscale")))
    assert bigger.shape == (128, 128, 3)


def test_the_gate_hides_image_outputs_and_says_so(client, gated, tmp_path):
    photo = handle_file(save(skimage.data.astronaut(), tmp_path / "a.png"))
    plain = np.asarray(Image.open(client.predict(photo, "blur", api_name="/blur_faces_image")))
    hidden = np.asarray(Image.open(gated.predict(photo, "blur", api_name="/blur_faces_image")))
    assert plain.shape == hidden.shape
    assert np.abs(plain.astype(int) - hidden.astype(int)).mean() > 10  # the whole output is blurred
    # JSON answers are not images: detection still reports the face under the gate.
    _, found = gated.predict(photo, api_name="/detect_faces")
    assert len(found["faces"]) == 1


def test_background_and_compare_faces_answer_through_the_api(client, tmp_path):
    photo = handle_file(save(skimage.data.astronaut(), tmp_path / "a.png"))
    cut, mask = client.predict(photo, "transparent", "#ffffff", None, api_name="/remove_background")
    rgba = np.asarray(Image.open(cut))
    assert rgba.shape == (512, 512, 4)
    assert rgba[100:200, 200:260, 3].mean() > 200 and rgba[:40, 430:, 3].mean() < 60   # face kept, sky gone
    flipped = handle_file(save(skimage.data.astronaut()[:, ::-1], tmp_path / "f.png"))
    _, same = client.predict(photo, flipped, api_name="/compare_faces")
    assert same["same_person"] is True and same["distance"] < 0.4
    camera = handle_file(save(np.stack([skimage.data.camera()] * 3, axis=2), tmp_path / "c.png"))
    _, other = client.predict(photo, camera, api_name="/compare_faces")
    assert other["same_person"] is False and other["distance"] > 0.6
