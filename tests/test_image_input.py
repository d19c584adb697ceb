"""Our image decoder (engine/media/image.py) and the guard that puts it in front of every image
input of the app (ui/gradio_patches.py), without starting a server."""
import io

import gradio as gr
import numpy as np
import pytest
import skimage.data
from gradio.data_classes import ImageData
from PIL import Image

from ui.gradio_patches import guard_image_inputs
from engine import UserFacingError
from engine.media.image import MAX_PIXELS, ImageError, read_image
from test_bad_inputs import bomb_png

PHOTO = skimage.data.astronaut()[::4, ::4]   # 128 x 128 RGB


def saved(tmp_path, name, image, **options):
    image.save(tmp_path / name, **options)
    return str(tmp_path / name)


def test_unusual_modes_come_out_as_the_picture(tmp_path):
    rgb = Image.fromarray(PHOTO)
    gray = np.asarray(rgb.convert("L"))
    sixteen = read_image(saved(tmp_path, "g16.png", Image.fromarray(gray.astype(np.uint16) * 257)))
    assert sixteen.shape == (128, 128, 3) and np.abs(sixteen[..., 0].astype(int) - gray).max() <= 1  # not white
    cmyk = read_image(saved(tmp_path, "c.jpg", rgb.convert("CMYK"), quality=95))
    assert np.abs(cmyk.astype(int) - PHOTO).mean() < 6
    palette = read_image(saved(tmp_path, "p.png", rgb.quantize(256)))
    assert np.abs(palette.astype(int) - PHOTO).mean() < 6
    alpha = np.full(PHOTO.shape[:2], 255, np.uint8)
    alpha[:32] = 0
    rgba_path = saved(tmp_path, "a.png", Image.fromarray(np.dstack([PHOTO // 4, alpha])))
    flat = read_image(rgba_path)
    assert (flat[:32] == 255).all() and np.array_equal(flat[32:], PHOTO[32:] // 4)   # transparent on white
    assert read_image(rgba_path, mode="RGBA").shape == (128, 128, 4)
    mask = read_image(rgba_path, mode="L")   # a gray mask ignores alpha, as Gradio's did: no white band
    assert mask.shape == (128, 128) and mask[:32].max() < 70
    floats = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    assert np.abs(read_image(saved(tmp_path, "f.tiff", floats))[..., 0].astype(int) - gray).max() <= 1


@pytest.mark.parametrize("content, message", [
    (b"", r"The image is empty \(0 bytes\)\."),
    (b"not a picture", "not a picture, or its format is not supported"),
    ("half", "truncated or corrupt"),
])
def test_broken_files_are_refused_in_plain_words(tmp_path, content, message):
    if content == "half":
        buffer = io.BytesIO()
        Image.fromarray(PHOTO).save(buffer, "PNG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageError, match=message) as caught:
        read_image(str(tmp_path / "x.png"))
    assert isinstance(caught.value, UserFacingError)   # a job failing on it shows the message as is
    with pytest.raises(ImageError, match=message):
        read_image(content)   # bytes, as a data: URL brings them


def test_bombs_are_refused_before_decoding(tmp_path):
    # 144 MP: PIL alone would only warn and decode 144 MB (432 MB as RGB); our cap refuses it.
    with pytest.raises(ImageError, match="12000x12000 is 144 megapixels, the limit is 100"):
        read_image(bomb_png(tmp_path / "b.png", 12000, 12000))
    with pytest.raises(ImageError, match="too large: over 200 megapixels"):
        read_image(bomb_png(tmp_path / "c.png", 30000, 30000, rows=8))
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS


def test_the_guard_covers_every_image_input_and_survives_prop_updates(tmp_path):
    with gr.Blocks() as demo:
        photo = gr.Image(label="Photo 1", type="numpy", image_mode="RGB")
        path_in = gr.Image(label="Style image", type="filepath")
        gr.Image(label="Result", interactive=False)
    assert guard_image_inputs(demo) == 3
    assert photo.get_block_name() == "image"   # the front end and the API see a plain gr.Image
    # Gradio rebuilds a component from its class when an event updates its props: still guarded.
    rebuilt = photo.__class__(**{**photo.constructor_args, "render": False})

    good = saved(tmp_path, "ok.tiff", Image.fromarray(PHOTO).convert("CMYK"))
    for component in (photo, rebuilt):
        assert component.preprocess(ImageData(path=good, orig_name="ok.tiff")).shape == (128, 128, 3)
    assert path_in.preprocess(ImageData(path=good, orig_name="ok.tiff")).endswith(".png")  # CMYK -> RGB copy
    (tmp_path / "t.png").write_text("text")
    with pytest.raises(gr.Error) as caught:
        rebuilt.preprocess(ImageData(path=str(tmp_path / "t.png"), orig_name="t.png"))
    assert caught.value.message == ("Photo 1: the image could not be read: the file is not a picture, "
                                    "or its format is not supported.")
