"""A job's files (data/jobs/<id>/) go only to the user who started the job, or an admin; so do the
copies of results that Gradio keeps in its cache (ui.shown_files notes who was shown each).

Gradio serves them at /gradio_api/file=<path> because the jobs folder is in launch()'s
allowed_paths (it must be: Gradio copies a result into its cache only from an allowed folder),
and that route asks only "is anyone logged in". This ASGI middleware, passed to launch() through
app_kwargs, sits in front of every route: a request naming a file under the jobs folder passes
only for the job's owner or an admin, else 404 (the same answer as for a job that does not
exist, so ids cannot be probed). A file in Gradio's cache that an event showed someone passes
only for the users it was shown to, or an admin. Without logins it lets everything through.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from ui import shown_files, users

_ROUTE = "file="


class JobFilesGuard:
    def __init__(self, app, jobs_root: str | os.PathLike, owner_of: Callable[[str], str | None],
                 cache_root: str | os.PathLike | None = None):
        """owner_of(job_id): the job's owner; KeyError for no such job. cache_root: Gradio's cache."""
        self.app, self.owner_of, self.cache_root = app, owner_of, cache_root
        self.roots = {Path(os.path.abspath(jobs_root)), Path(jobs_root).resolve()}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and users.logins_required() and not self.passes(scope):
            await PlainTextResponse("Not found.", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def passes(self, scope) -> bool:
        path = scope.get("path", "")
        job_id = self.job_of(path)
        if job_id is not None:
            return self.allowed(scope, job_id)
        at = path.find(_ROUTE)
        if at < 0 or self.cache_root is None:
            return True
        shown_to = shown_files.users_of(path[at + len(_ROUTE):], self.cache_root)
        if shown_to is None:
            return True
        user = _login_of(scope)
        return user in shown_to or (user is not None and users.is_admin(user))

    def job_of(self, path: str) -> str | None:
        """The job whose folder the /file= path names ("" for the jobs folder itself), or None."""
        at = path.find(_ROUTE)
        if at < 0:
            return None
        target = path[at + len(_ROUTE):]
        # Both spellings: Gradio checks the resolved path, a symlink could lead out of or into it.
        for candidate in (Path(os.path.abspath(target)), Path(target).resolve()):
            for root in self.roots:
                try:
                    parts = candidate.relative_to(root).parts
                except ValueError:
                    continue
                return parts[0] if parts else ""
        return None

    def allowed(self, scope, job_id: str) -> bool:
        user = _login_of(scope)
        if user is None:
            return False
        if users.is_admin(user):
            return True
        try:
            return bool(job_id) and self.owner_of(job_id) == user
        except KeyError:
            return False


def _login_of(scope) -> str | None:
    """The logged-in user of a request, read as Gradio's own /user route reads it: the access
    token cookie, looked up in the app's tokens (Starlette puts the app in the scope)."""
    app = scope.get("app")
    cookie_id, tokens = getattr(app, "cookie_id", None), getattr(app, "tokens", None)
    if cookie_id is None or tokens is None:
        return None
    cookies = Request(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


def middleware(engine) -> Middleware:
    """The guard for this engine's jobs folder, for launch(app_kwargs={"middleware": [...]})."""
    from gradio.utils import get_upload_folder

    return Middleware(JobFilesGuard, jobs_root=engine.jobs.root / "jobs",
                      owner_of=lambda job_id: engine.jobs.get(job_id).get("owner"),
                      cache_root=get_upload_folder())   # each Block's GRADIO_CACHE
