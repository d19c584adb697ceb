"""Document layout: turn a photographed or scanned page upright and find its layout regions."""
from __future__ import annotations

import gradio as gr
import numpy as np

from engine import Engine, pixel_bucket
from ui.components import on_click, photo_input, picture_and_json, run_button
from ui.safety import gate_output

from . import check
from . import model as doc
from . import page

NOTE = ("A photo or scan of one page. The page is turned upright when it lies on its side or upside "
        "down (only when the orientation model is at least 80% sure), then its regions are found: "
        "text, title, figure, figure caption, table, table caption, header, footer, reference, "
        "equation (PP-PicoDet trained on CDLA, Chinese and English papers and books). "
        "A photo that is no document comes back as one figure. PDFs are not read: "
        "export the page as an image first.")


def page_layout(engine: Engine, image: np.ndarray | None, min_score: float = doc.DEFAULT_MIN_SCORE,
                fix_orientation: bool = True) -> tuple[np.ndarray, dict]:
    """Find the layout regions of a page, after turning it upright.

    Args:
        image: a photo or scan of one page, RGB.
        min_score: regions scoring lower are left out (0.05 to 0.95; default 0.5).
        fix_orientation: turn the page upright first when it lies at 90, 180 or 270 degrees.

    Returns:
        The upright page with each region outlined and labelled, and JSON
        {"orientation": {"angle": degrees the page was turned clockwise (0, 90, 180, 270),
        "score": float, "scores": {angle: float}, "turned": bool} or null,
        "size": [width, height] of the upright page, "regions": [{"label": str, "box": [x1, y1,
        x2, y2] in upright-page pixels, "score": float}]}, best first. Labels: text, title,
        figure, figure_caption, table, table_caption, header, footer, reference, equation.
    """
    check({"min_score": min_score}, {"image": image})
    height, width = image.shape[:2]
    with engine.run("page_layout", bucket=pixel_bucket(width, height)) as run:
        drawn, found = page.analyse_page(run.call, image, min_score, bool(fix_orientation))
    return gate_output(engine, drawn), found


def page_orientation(engine: Engine, image: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Find which way up a page of text is, and turn it upright.

    Args:
        image: a photo or scan of a page, RGB.

    Returns:
        The page turned upright (unchanged when it already is, or when the model is less than
        80% sure), and JSON {"angle": degrees the page is turned clockwise (0, 90, 180, 270),
        "score": float, "scores": {angle: float}, "turned": bool}.
    """
    check({}, {"image": image})
    height, width = image.shape[:2]
    with engine.run("page_orientation", bucket=pixel_bucket(width, height)) as run:
        turned, found = page.orient_page(run.call, image)
    return gate_output(engine, turned), found


def build(engine: Engine) -> None:
    gr.Markdown(NOTE)
    with gr.Row():
        with gr.Column():
            image = photo_input("Page")
            min_score = gr.Slider(0.05, 0.95, value=doc.DEFAULT_MIN_SCORE, step=0.05, label="Minimum score")
            fix = gr.Checkbox(value=True, label="Turn the page upright first")
            with gr.Row():
                run = run_button("Find the layout")
                turn = gr.Button("Orientation only")
        annotated, found = picture_and_json("Layout", "Orientation and regions (JSON)")
    on_click(engine, run, page_layout, "find the page layout", [image, min_score, fix], [annotated, found],
             api_name="page_layout")
    on_click(engine, turn, page_orientation, "find the page orientation", image, [annotated, found],
             api_name="page_orientation")
