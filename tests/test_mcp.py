"""launch.py --mcp: the real app serves every API endpoint as an MCP tool (Gradio's server, streamable
HTTP at /gradio_api/mcp/), described by its handler's docstring; an MCP client (the `mcp` package's
own) lists the tools and runs face detection on a photo and speech to text on a recording."""
from __future__ import annotations

import ast
import asyncio
import base64
import mimetypes
from pathlib import Path

import gradio
import httpx
import pytest
import skimage
from gradio_client import Client
from gradio_client.utils import encode_file_path
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import launch
from app_process import start_app, stop_app

ASTRONAUT = Path(skimage.__file__).parent / "data" / "astronaut.png"   # 512x512, one face
SPEECH = Path(gradio.__file__).parent / "media_assets" / "audio" / "cate_blanch.mp3"   # 7.9 s, one woman


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    proc, url = start_app(tmp_path_factory.mktemp("mcp") / "data", "--mcp")
    try:
        yield url
    finally:
        stop_app(proc)


def with_session(url: str, work):
    """Run `await work(session)` on a fresh MCP session with the app, as a client such as Claude
    Desktop or Cursor opens one."""
    async def main():
        async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)
    return asyncio.run(main())


def inline(path: Path) -> str:
    """A local file as a tool argument: a data: URI. Gradio's server also takes http(s) URLs, but
    downloads them only from public hosts (see test_local_file_urls_are_refused)."""
    return f"data:{mimetypes.guess_type(path)[0]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def summary(docstring: str) -> str:
    """The docstring's first paragraph as one line: the part Gradio puts first in the description."""
    return " ".join(docstring.split("\n\n")[0].split())


def test_flag():
    assert launch.parse_args(["--mcp"]).mcp is True
    assert launch.parse_args([]).mcp is False
    # Behind a login Gradio's MCP server lists the tools but every call fails: refused at once.
    for login in (["--auth", "user:secret"], ["--share"]):
        with pytest.raises(SystemExit):
            launch.parse_args(["--mcp", *login])


def test_every_endpoint_is_a_tool_described_by_its_docstring(app):
    tools = {tool.name: tool for tool in with_session(app, lambda s: s.list_tools()).tools}
    endpoints = Client(app, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    # A tool is named after its handler (the OCR endpoint "ocr" is the tool read_text); Gradio's
    # schema route says which endpoint each tool runs.
    served = {t["name"]: t["meta"]["endpoint_name"] for t in httpx.get(app + "gradio_api/mcp/schema").json()}
    assert set(served) == set(tools)
    assert sorted(served.values()) == sorted(name.lstrip("/") for name in endpoints)
    assert not [name for name, tool in tools.items() if not tool.description], "tools without a docstring"

    from tabs.faces.tab import detect_faces
    from tabs.stt.tab import transcribe
    for fn in (detect_faces, transcribe):
        tool = tools[fn.__name__]
        assert tool.description.startswith(summary(fn.__doc__))
        assert " Returns: " in tool.description   # the docstring's Returns section follows
    image = tools["detect_faces"].inputSchema["properties"]["image"]
    assert (image["type"], image["description"]) == ("string", "the photo to search, RGB.")
    assert tools["detect_faces"].inputSchema["required"] == ["image"]
    media = tools["transcribe"].inputSchema["properties"]
    assert media["media"]["type"] == "string" and media["media"]["description"].startswith("the audio file")
    assert media["timestamps"]["enum"] == ["segment", "word"] and media["timestamps"]["default"] == "segment"
    # Wrapped Args lines reach the tool whole (ui.handlers.one_line_entries), not cut at the wrap.
    assert media["timestamps"]["description"].endswith("or \"word\" for one subtitle per word.")
    assert media["burn_in"]["description"].endswith("players can switch on and off.")
    assert "(shown on the Jobs tab)" in tools["transcribe"].description


def test_detect_faces_on_a_photo(app):
    result = with_session(app, lambda s: s.call_tool("detect_faces", {"image": inline(ASTRONAUT)}))
    assert not result.isError, result.content
    # Without a progress token Gradio answers a queued endpoint with one text: its outputs' repr.
    annotated, found = ast.literal_eval(result.content[0].text)
    assert annotated["url"].startswith(app + "gradio_api/file=")    # the drawn picture, served by the app
    (face,) = found["faces"]
    x1, y1, x2, y2 = face["box"]
    # Eileen Collins' face in astronaut.png: about x 180-268, y 61-174 of 512x512.
    assert 160 < x1 < 200 and 250 < x2 < 290 and 40 < y1 < 80 and 155 < y2 < 195
    assert face["score"] > 0.9
    assert len(face["landmarks"]) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])


def test_transcribe_speech_with_progress(app):
    progress: list[str | None] = []

    async def work(session):
        async def heard(step, total, message):
            progress.append(message)
        return await session.call_tool("transcribe", {"media": inline(SPEECH)}, progress_callback=heard)

    result = with_session(app, work)
    assert not result.isError, result.content
    # With a progress token each output is its own content: the text, then the JSON's repr, then the
    # SRT and WebVTT files' URLs; the video output is None for audio.
    text, details, srt, vtt = (c.text for c in result.content[:4])
    words = text.lower()
    for phrase in ("i sleep with a dagger", "touch me", "you understand"):
        assert phrase in words, text
    segments = ast.literal_eval(details)["segments"]
    assert segments[0]["start"] < 1.0 and 6.0 < segments[-1]["end"] < 8.0
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    assert srt.endswith(".srt") and vtt.endswith(".vtt")
    assert "Processing" in progress     # the queue's status reaches the client while it waits


def test_local_file_urls_are_refused(app):
    """Gradio fetches URL arguments through its SSRF guard, which refuses private and loopback
    hosts, its own included: that is why a local client sends files inline (the README says so)."""
    with open(ASTRONAUT, "rb") as f:
        uploaded = httpx.post(app + "gradio_api/upload", files={"files": f}).json()[0]
    url = f"{app}gradio_api/file={encode_file_path(uploaded)}"
    result = with_session(app, lambda s: s.call_tool("detect_faces", {"image": url}))
    assert result.isError
    assert "127.0.0.1 failed validation" in result.content[0].text
