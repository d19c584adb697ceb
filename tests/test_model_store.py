"""The model store on local files and local HTTP servers only: folders and single files registered
where they are, pickles refused, sha256 checked, a download cut halfway resumed with HTTP Range
(directly, and as a download_model job after a restart), the hub path (snapshot_download with
progress, file choice and LFS sha256 checks) against a fake hub on 127.0.0.1, and the offline
message within a second."""
import hashlib
import http.server
import json
import re
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from app_calls import endpoints
import torch
from safetensors.torch import save_file

import huggingface_hub  # noqa: F401  (imported by the app long before any request)
import store as ms
from engine import Engine
from tiny_diffusion import config_only_copy, save_tiny_pipeline
from tabs.catalog import connect_store, store_kinds
from tabs.generate import pipeline as dz
from tabs.generate.registry import diffusion_models


def safetensors_file(path: Path, size_kib: int = 64, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.rand(size_kib * 256, generator=generator)  # 4 bytes each
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": tensor}, str(path))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sd")
    folder = save_tiny_pipeline(root / "sd")
    return {"folder": folder, "config": config_only_copy(folder, root / "sd-config")}


def model_store(data, **options) -> ms.ModelStore:
    """A store that knows the capabilities' kinds (diffusion, sam), as build_engine makes it."""
    return ms.ModelStore(data, kinds=store_kinds(), **options)


@pytest.fixture
def store(tmp_path):
    return model_store(tmp_path / "data", cache_dir=tmp_path / "hub-cache")


# ---------------------------------------------------------------------------------- local sources

def test_a_saved_pipeline_folder_is_registered_where_it_is_and_reaches_the_generate_list(tiny_sd, tmp_path):
    engine = Engine(tmp_path / "data", job_options={"job_threads": 1})
    store = connect_store(engine)
    assert connect_store(engine) is store is engine.services["store"]  # idempotent
    entry = store.add(str(tiny_sd["folder"]), "auto", name="tiny-sd")
    assert entry["kind"] == "diffusion" and entry["source_type"] == "folder" and not entry["owned"]
    assert entry["path"] == str(tiny_sd["folder"].resolve())
    assert entry["bytes"] == ms.folder_bytes(tiny_sd["folder"]) > 1_000_000
    # The Generate tab lists the engine's diffusion models: the new one is there at once.
    assert diffusion_models(engine) == ["tiny-sd"]
    spec = engine.registry.get("tiny-sd")
    assert spec.role == "heavy" and spec.source == entry["path"]
    # Loaded through the same path as a real download (use_safetensors, no network): one small image.
    with engine.run("txt2img") as run:
        images = dz.generate(run.call, "tiny-sd", "txt2img", dz.Request("a photo of a cat", steps=1, width=64, height=64,
                                                                     seed=1))
    assert images[0].size == (64, 64)
    # The registry survives a restart, and a new engine gets the model back from it.
    again = Engine(tmp_path / "data")
    connect_store(again)
    assert diffusion_models(again) == ["tiny-sd"]
    # Adding the same source under the same name again is harmless; another source under it is not.
    assert store.add(str(tiny_sd["folder"]), name="tiny-sd")["added"] == entry["added"]
    with pytest.raises(ms.ModelStoreError, match="already registered"):
        store.add(str(tiny_sd["config"]), "config", name="tiny-sd")
    removed = store.remove("tiny-sd")
    assert removed["freed_bytes"] == 0 and tiny_sd["folder"].exists()  # the user's folder is never deleted
    assert store.list() == []


def test_a_single_safetensors_file_is_registered_and_pickles_are_refused(store, tmp_path):
    single = safetensors_file(tmp_path / "files" / "tiny.safetensors")
    entry = store.add(str(single))
    assert entry["kind"] == "diffusion" and entry["source_type"] == "file" and entry["name"] == "tiny"
    assert entry["bytes"] == single.stat().st_size

    ckpt = tmp_path / "files" / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4)}}, ckpt)
    with pytest.raises(ms.Refused, match="pickle checkpoint.*only .safetensors"):
        store.add(str(ckpt))
    with pytest.raises(ms.Refused, match="pickle"):
        store.check(str(ckpt))
    # A pickle under a .safetensors name is refused by its bytes.
    disguised = tmp_path / "files" / "disguised.safetensors"
    torch.save({"w": torch.zeros(4)}, disguised)
    with pytest.raises(ms.Refused, match="pickle"):
        store.add(str(disguised))
    # A folder with pickle weights only.
    folder = tmp_path / "files" / "bin-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam"}))
    torch.save({"w": torch.zeros(4)}, folder / "pytorch_model.bin")
    with pytest.raises(ms.Refused, match="only pickle weights.*use_safetensors"):
        store.add(str(folder), "sam")
    # A URL naming a pickle is refused before anything is downloaded.
    with pytest.raises(ms.Refused):
        store.check("https://example.invalid/model.ckpt")
    assert [e["name"] for e in store.list()] == ["tiny"]


def test_kind_is_checked_against_the_files(store, tiny_sd, tmp_path):
    with pytest.raises(ms.ModelStoreError, match="not a SAM model"):
        store.add(str(tiny_sd["folder"]), "sam")
    with pytest.raises(ms.ModelStoreError, match="no such folder or file"):
        store.add(str(tmp_path / "nowhere"))
    with pytest.raises(ms.ModelStoreError, match="Unknown kind"):
        store.add(str(tiny_sd["folder"]), "lora")
    assert store.add(str(tiny_sd["config"]), "config", name="sd-configs")["kind"] == "config"


def test_list_remove_and_disk_usage(store, tiny_sd, tmp_path, http_server):
    store.add(str(tiny_sd["folder"]), name="sd")
    single = safetensors_file(tmp_path / "files" / "one.safetensors", 128)
    store.add(str(single), "other", name="one")
    url = http_server.serve("two.safetensors", safetensors_file(tmp_path / "served" / "two.safetensors", 256))
    downloaded = store.add(url, name="two")
    assert downloaded["owned"] and Path(downloaded["path"]).parent == store.downloads

    assert [e["name"] for e in store.list()] == ["sd", "one", "two"]
    assert [e["name"] for e in store.list(kind="diffusion")] == ["sd", "two"]
    assert [e["name"] for e in store.list(kind="other")] == ["one"]
    usage = store.disk_usage()
    local = ms.folder_bytes(tiny_sd["folder"]) + single.stat().st_size
    assert usage["models"] == 3 and usage["local_bytes"] == local
    assert usage["downloaded_bytes"] == downloaded["bytes"] == Path(downloaded["path"]).stat().st_size
    assert usage["total_bytes"] == local + downloaded["bytes"] and usage["free_bytes"] > 0

    removed = store.remove("two")
    assert removed["freed_bytes"] == downloaded["bytes"] and not Path(downloaded["path"]).exists()
    store.remove("one")
    assert single.exists()  # the user's own file stays
    with pytest.raises(KeyError):
        store.remove("one")
    assert store.disk_usage()["downloaded_bytes"] == 0
    # A file gone from disk is listed as missing, not hidden.
    moved = safetensors_file(tmp_path / "files" / "moved.safetensors")
    store.add(str(moved), name="moved")
    moved.unlink()
    assert {e["name"]: e["exists"] for e in store.list()} == {"sd": True, "moved": False}


def test_a_sha256_mismatch_is_refused(store, tmp_path, http_server):
    single = safetensors_file(tmp_path / "files" / "tiny.safetensors")
    with pytest.raises(ms.ChecksumMismatch, match="sha256"):
        store.add(str(single), sha256="0" * 64)
    assert store.list() == []
    entry = store.add(str(single), sha256=sha256(single).upper())
    assert entry["sha256"] == sha256(single)
    with pytest.raises(ms.ModelStoreError, match="64 hexadecimal"):
        store.add(str(single), sha256="abc", name="x")

    url = http_server.serve("served.safetensors", safetensors_file(tmp_path / "served" / "s.safetensors", seed=3))
    with pytest.raises(ms.ChecksumMismatch, match="was deleted"):
        store.add(url, sha256="1" * 64)
    assert not list(store.downloads.glob("*.part")) and store.pending() == []
    assert [e["name"] for e in store.list()] == ["tiny"]


# ---------------------------------------------------------------------------------- offline

def test_offline_a_hub_id_fails_at_once_saying_what_to_download_and_where(store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ms.Offline) as checked:
        store.check("stabilityai/sd-turbo", "diffusion")
    with pytest.raises(ms.Offline) as added:
        store.add("stabilityai/sd-turbo", "diffusion")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    for message in (str(checked.value), str(added.value)):
        assert "HF_HUB_OFFLINE" in message
        assert "hf download stabilityai/sd-turbo" in message and "*.safetensors" in message  # what
        assert str(store.cache_dir) in message and "models--stabilityai--sd-turbo" in message  # where
        assert "add that folder here" in message
    with pytest.raises(ms.Offline, match=r"hf download org/model v1\.safetensors --revision main"):
        store.add("https://huggingface.co/org/model/resolve/main/v1.safetensors")
    assert store.list() == [] and store.pending() == []


def test_an_unreachable_host_fails_at_once(tmp_path):
    store = model_store(tmp_path / "data", cache_dir=tmp_path / "cache", connect_timeout_s=0.5)
    started = time.perf_counter()
    with pytest.raises(ms.Offline) as error:
        store.add("https://no-such-host.invalid/models/tiny.safetensors")
    assert time.perf_counter() - started < 1.0
    assert "Download that file" in str(error.value) and str(store.downloads) in str(error.value)


def test_the_models_tab_shows_the_offline_message_fast(tmp_path, monkeypatch):
    import gradio as gr

    from tabs.models import tab

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = Engine(tmp_path / "data")
    connect_store(engine)
    with gr.Blocks() as demo:
        tab.build(engine)
    apis = endpoints(demo)
    assert {"add_model", "list_models", "remove_model"} <= set(apis)
    started = time.perf_counter()
    with pytest.raises(gr.Error, match="hf download facebook/sam-vit-base"):
        apis["add_model"]("facebook/sam-vit-base", "sam", progress=lambda *a, **k: None)
    assert time.perf_counter() - started < 1.0
    assert apis["list_models"]() == [] == tab.list_models(engine)
    # No anonymous endpoints: the page-load refresh of the table is private.
    assert not [fn for fn in demo.fns.values() if (fn.api_name or "").startswith("lambda")]


# ---------------------------------------------------------------------------------- downloads

class Server:
    """A local HTTP server for single files with Range support; `cut_next` makes the next full
    response stop halfway through its body (the connection drops)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cut_next = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = urllib.parse.unquote(self.path.lstrip("/"))
                outer.requests.append({"path": name, "range": self.headers.get("Range")})
                body = outer.files.get(name)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
                self.end_headers()
                if outer.cut_next and not start:
                    outer.cut_next = False
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name: str, path: Path) -> str:
        self.files[name] = Path(path).read_bytes()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()


def test_a_download_cut_halfway_resumes_with_a_range_request(store, tmp_path, http_server):
    source = safetensors_file(tmp_path / "served" / "big.safetensors", 1024)  # 1 MiB
    url = http_server.serve("big.safetensors", source)
    http_server.cut_next = True
    reports = []
    with pytest.raises(ms.DownloadInterrupted, match="resumes"):
        store.add(url, sha256=sha256(source), retries=0, progress=lambda f, m: reports.append((f, m)))
    part = next(store.downloads.glob("*.part"))
    assert 0 < part.stat().st_size < source.stat().st_size
    assert [p["source"] for p in store.pending()] == [url]  # shown as a partial download
    half = part.stat().st_size

    entry = store.add(url, sha256=sha256(source), progress=lambda f, m: reports.append((f, m)))
    assert http_server.requests[-1]["range"] == f"bytes={half}-"  # only the rest was fetched
    assert Path(entry["path"]).read_bytes() == source.read_bytes()
    assert entry["sha256"] == sha256(source) and entry["owned"] and entry["name"] == "big"
    assert store.pending() == [] and not list(store.downloads.glob("*.part"))
    assert reports[-1] == (1.0, "added big") and any("downloading" in m for _, m in reports)


def test_a_cut_download_retries_by_itself(store, tmp_path, http_server):
    source = safetensors_file(tmp_path / "served" / "mid.safetensors", 256)
    url = http_server.serve("mid.safetensors", source)
    http_server.cut_next = True
    entry = store.add(url)
    assert [r["range"] is not None for r in http_server.requests] == [False, True]
    assert sha256(Path(entry["path"])) == sha256(source)


def test_a_pickle_served_under_an_api_url_is_refused_after_download(store, tmp_path, http_server):
    pickle = tmp_path / "served" / "model"
    pickle.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1000)}, pickle)
    url = http_server.serve("api/download/123", pickle)
    with pytest.raises(ms.Refused, match="pickle"):
        store.add(url, name="from-api")
    assert store.list() == [] and not any(store.downloads.iterdir())


def test_the_download_model_job_resumes_after_a_restart(tmp_path, http_server):
    data = tmp_path / "data"
    source = safetensors_file(tmp_path / "served" / "job.safetensors", 512)
    url = http_server.serve("job.safetensors", source)

    # First process: the job is queued, starts downloading and the process dies halfway.
    first = Engine(data, job_options={"job_threads": 1})
    store = connect_store(first)
    assert connect_store(first) is store and ms.JOB_CAPABILITY in first.jobs.kinds
    job_id = first.jobs.submit(ms.JOB_CAPABILITY, {"source": url, "kind": "auto", "sha256": sha256(source)})
    http_server.cut_next = True
    with pytest.raises(ms.DownloadInterrupted):
        store.add(url, sha256=sha256(source), retries=0)  # what the job had done when the process died
    first.jobs.store.update(job_id, state="running")

    # Second process: the job comes back as interrupted and finishes from the partial file.
    second = Engine(data, job_options={"job_threads": 1})
    connect_store(second)
    second.jobs.start()
    try:
        job = list(second.jobs.follow(job_id))[-1]
    finally:
        second.jobs.stop()
    assert job["state"] == "done", job["error"]
    assert http_server.requests[-1]["range"] is not None  # resumed, not started again
    entry = json.loads(Path(job["result"]).read_text())
    assert entry["name"] == "job" and entry["sha256"] == sha256(source)
    assert [e["name"] for e in ms.ModelStore(data).list()] == ["job"]
    assert job["progress"] == 1.0


def test_a_failed_download_job_says_why(tmp_path, http_server):
    # The queue's defaults (chunk_frames, for video jobs) reach every job's params: not add's business.
    engine = Engine(tmp_path / "data", job_options={"job_threads": 1, "defaults": {"chunk_frames": 32}})
    connect_store(engine)
    with pytest.raises(ms.ModelStoreError, match="Give a source"):
        engine.jobs.submit(ms.JOB_CAPABILITY, {"source": ""})
    with pytest.raises(ms.ModelStoreError, match="Bad download_model parameters: colour"):
        engine.jobs.submit(ms.JOB_CAPABILITY, {"source": "org/model", "colour": "red"})
    engine.jobs.start()
    try:
        url = http_server.serve("x.safetensors", safetensors_file(tmp_path / "served" / "x.safetensors"))
        job_id = engine.jobs.submit(ms.JOB_CAPABILITY, {"source": url.replace("x.safetensors", "missing.safetensors")})
        job = list(engine.jobs.follow(job_id))[-1]
    finally:
        engine.jobs.stop()
    assert job["state"] == "failed" and "404" in job["error"] and "Traceback" not in job["error"]


# ---------------------------------------------------------------------------------- the hub path

class FakeHub:
    """Just enough of the hub's HTTP API for model_info, snapshot_download and hf_hub_download:
    one repo at one commit, LFS metadata (size, sha256) for the .safetensors files."""

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, repo: str, files: dict[str, bytes], lie_about: str | None = None):
        self.repo, self.files, self.requests = repo, files, []
        self.lie_about = lie_about  # a file whose sha256 the metadata gets wrong
        outer = self

        def meta(path: str) -> dict:
            body = outer.files[path]
            sha = hashlib.sha256(body).hexdigest()
            if path == outer.lie_about:
                sha = "f" * 64
            lfs = {"size": len(body), "sha256": sha, "pointerSize": 130} if path.endswith(".safetensors") else None
            return {"size": len(body), "lfs": lfs, "oid": hashlib.sha1(body).hexdigest()}

        def tree_entry(name: str) -> dict:
            m = meta(name)
            lfs = m["lfs"] and {"oid": m["lfs"]["sha256"], "size": m["size"], "pointerSize": 130}
            return {"type": "file", "path": name, "size": m["size"], "oid": m["oid"], "lfs": lfs}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def json(self, value):
                self.reply(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

            def do_HEAD(self):
                self.do_GET()

            def do_POST(self):  # paths-info: form field "paths", repeated
                path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                outer.requests.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                wanted = urllib.parse.parse_qs(body).get("paths", [])
                if not path.startswith(f"/api/models/{outer.repo}/paths-info/"):
                    return self.reply(404, b"{}")
                self.json([tree_entry(name) for name in wanted if name in outer.files])

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                path = urllib.parse.unquote(url.path)
                outer.requests.append(f"{self.command} {path}")
                api = f"/api/models/{outer.repo}"
                if path == api or path.startswith(api + "/revision/"):
                    siblings = []
                    for name in outer.files:
                        m = meta(name)
                        siblings.append({"rfilename": name, "size": m["size"], "blobId": m["oid"], "lfs": m["lfs"]})
                    return self.json({"id": outer.repo, "modelId": outer.repo, "sha": outer.COMMIT,
                                      "siblings": siblings, "private": False, "tags": [], "downloads": 0,
                                      "likes": 0})
                if path.startswith(api + "/tree/"):
                    return self.json([tree_entry(name) for name in outer.files])
                prefix = f"/{outer.repo}/resolve/"
                if path.startswith(prefix):
                    _, _, name = path[len(prefix):].partition("/")
                    if name not in outer.files:
                        return self.reply(404, b"", {"X-Error-Code": "EntryNotFound"})
                    body = outer.files[name]
                    m = meta(name)
                    headers = {"X-Repo-Commit": outer.COMMIT, "ETag": f'"{m["oid"]}"'}
                    if m["lfs"]:
                        headers.update({"X-Linked-Etag": f'"{hashlib.sha256(body).hexdigest()}"',
                                        "X-Linked-Size": str(len(body))})
                    start = 0
                    match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
                    if match and self.command == "GET":
                        start = int(match.group(1))
                        headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                        return self.reply(206, body[start:], headers)
                    return self.reply(200, body, headers)
                self.reply(404, b"{}", {"Content-Type": "application/json"})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def diffusers_repo(tmp_path: Path) -> dict[str, bytes]:
    """A diffusers-layout repo as the hub has them: one set of weights per component, plus an fp16
    variant, a root-level single-file checkpoint and a pickle that must not be fetched."""
    def st(name, seed):
        return safetensors_file(tmp_path / "repo" / name, 32, seed).read_bytes()

    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None]}
    return {
        "model_index.json": json.dumps(index).encode(),
        "unet/config.json": b"{}", "vae/config.json": b"{}",
        "unet/diffusion_pytorch_model.safetensors": st("u", 1),
        "unet/diffusion_pytorch_model.fp16.safetensors": st("u16", 2),
        "vae/diffusion_pytorch_model.safetensors": st("v", 3),
        "vae/diffusion_pytorch_model.bin": b"\x80\x02pickle",
        "v1-5-pruned.safetensors": st("single", 4),
        "README.md": b"# tiny",
    }


@pytest.fixture
def online(monkeypatch):
    """The hub client with its offline switch off (the tests' conftest turns it on)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def test_choose_repo_files_takes_one_set_of_safetensors_and_configs():
    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
             "text_encoder/model.safetensors", "text_encoder/config.json", "tokenizer/vocab.json",
             "tokenizer/merges.txt", "v1-5-pruned-emaonly.safetensors", "safety_checker/model.safetensors",
             "README.md", "onnx/unet/model.onnx"]
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "safety_checker": [None, None]}
    kinds = ms.kinds.Kinds(store_kinds())

    def choose(files, variant=None, kind="auto"):
        return kinds.repo_files(kind, files, variant, lambda name: index)

    assert choose(files) == choose(files, kind="diffusion") == [
        "model_index.json", "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/merges.txt",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in choose(files, "fp16")
    sam_files = ["config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5"]
    assert choose(sam_files) == choose(sam_files, kind="sam") == [
        "config.json", "model.safetensors", "preprocessor_config.json"]


def test_a_hub_repo_downloads_with_progress_checks_sha256_and_removes(tmp_path, online, monkeypatch):
    hub = FakeHub("org/tiny-sd", diffusers_repo(tmp_path))
    try:
        store = model_store(tmp_path / "data", cache_dir=tmp_path / "cache", endpoint=hub.endpoint)
        reports = []
        entry = store.add("org/tiny-sd", progress=lambda f, m: reports.append((f, m)))
        assert entry["kind"] == "diffusion" and entry["owned"] and entry["revision"] == FakeHub.COMMIT
        assert sorted(entry["files"]) == ["model_index.json", "unet/config.json",
                                          "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                                          "vae/diffusion_pytorch_model.safetensors"]
        assert sorted(entry["sha256"]) == ["unet/diffusion_pytorch_model.safetensors",
                                           "vae/diffusion_pytorch_model.safetensors"]
        path = Path(entry["path"])
        assert path.parent.name == "snapshots" and str(store.cache_dir) in str(path)
        assert not (path / "v1-5-pruned.safetensors").exists() and not (path / "vae/diffusion_pytorch_model.bin").exists()
        fetched = [r for r in hub.requests if "/resolve/" in r and r.startswith("GET")]
        assert not any("fp16" in r or "pruned" in r or ".bin" in r for r in fetched)
        assert reports[-1] == (1.0, "added org/tiny-sd") and any("checking sha256" in m for _, m in reports)
        assert any(m.startswith("downloading: ") and f > 0 for f, m in reports)  # bytes through the tqdm hook

        # Offline now: the same repo under another name comes from the cache, and is not ours to delete.
        from huggingface_hub import constants

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        started = time.perf_counter()
        cached = store.add("org/tiny-sd", name="tiny-again")
        assert time.perf_counter() - started < 1.0
        assert cached["path"] == entry["path"] and not cached["owned"]
        store.remove("tiny-again")
        assert path.exists()
        removed = store.remove("org/tiny-sd")
        assert removed["freed_bytes"] > 0 and not path.exists()
    finally:
        hub.close()


def test_a_hub_file_whose_sha256_differs_is_deleted(tmp_path, online):
    files = {"config.json": json.dumps({"model_type": "sam"}).encode(),
             "model.safetensors": safetensors_file(tmp_path / "m.safetensors", 16).read_bytes()}
    hub = FakeHub("org/tiny-sam", files, lie_about="model.safetensors")
    try:
        store = model_store(tmp_path / "data", cache_dir=tmp_path / "cache", endpoint=hub.endpoint)
        with pytest.raises(ms.ChecksumMismatch, match="was deleted"):
            store.add("org/tiny-sam", "sam")
        assert store.list() == [] and store.pending() == []
        blobs = list((tmp_path / "cache").rglob("blobs/*"))
        assert all(p.stat().st_size < 1000 for p in blobs)  # the weights' blob is gone
    finally:
        hub.close()


def test_a_hub_resolve_url_fetches_one_file(tmp_path, online):
    files = diffusers_repo(tmp_path)
    hub = FakeHub("org/tiny-sd", files)
    try:
        store = model_store(tmp_path / "data", cache_dir=tmp_path / "cache", endpoint=hub.endpoint)
        entry = store.add(f"{hub.endpoint}/org/tiny-sd/resolve/main/v1-5-pruned.safetensors")
        assert entry["source_type"] == "hub_file" and entry["kind"] == "diffusion" and entry["name"] == "org/tiny-sd/v1-5-pruned"
        assert Path(entry["path"]).read_bytes() == files["v1-5-pruned.safetensors"]
        assert entry["sha256"] == hashlib.sha256(files["v1-5-pruned.safetensors"]).hexdigest()
        removed = store.remove(entry["name"])
        assert removed["freed_bytes"] == len(files["v1-5-pruned.safetensors"]) and not Path(entry["path"]).exists()
        with pytest.raises(ms.Refused):
            store.add(f"{hub.endpoint}/org/tiny-sd/resolve/main/vae/diffusion_pytorch_model.bin")
    finally:
        hub.close()
