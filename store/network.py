"""Is the network there? HF_HUB_OFFLINE, and a sub-second TCP probe of a host (no retries), so an
add fails at once with what to do instead of waiting on a client's timeouts."""
from __future__ import annotations

import os
import socket
import threading
import urllib.parse

CONNECT_TIMEOUT_S = 0.8


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now and as huggingface_hub read it at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or env.strip().upper() in ("1", "ON", "YES", "TRUE")


def _proxy_for(parsed: urllib.parse.ParseResult) -> str | None:
    """The HTTP(S) proxy a connection to this URL goes through, if any (NO_PROXY honoured)."""
    if parsed.scheme == "https":
        proxy = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
                 or os.environ.get("all_proxy"))
    else:
        proxy = os.environ.get("HTTP_PROXY") or os.environ.get("http_proxy")
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if proxy and any(parsed.hostname and parsed.hostname.endswith(h.strip().lstrip("*."))
                     for h in no_proxy.split(",") if h.strip()):
        return None
    return proxy


def reachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the URL's host opens within timeout_s (DNS included), else why not.
    Behind an HTTP(S) proxy the proxy is what must answer."""
    parsed = urllib.parse.urlparse(url)
    proxy = _proxy_for(parsed)
    if proxy:
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
    host = parsed.hostname
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    # getaddrinfo has no timeout of its own: a thread bounds the whole check.
    thread = threading.Thread(target=attempt, name="wimmel-reachable", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not result:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    return result[0]
