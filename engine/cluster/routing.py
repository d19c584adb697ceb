"""Which waiting job a free cluster worker takes: issue 17's routing by model.

A job goes to a free worker whose pool already holds its model; else to the free worker with the
most room. Each worker then keeps the queue's grouping and fairness rules for itself: jobs cut off
by a crash first, then a job passed over `max_passed_over` times, then one whose model it holds,
else the oldest it may take. Every job older than the pick that this worker could have taken
counts as passed over once, so the fairness bound holds per worker.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..job_lanes import choose


@dataclass
class View:
    """What the head knows of a worker: its resident models, last model, room, job kinds."""
    models: set[str] = field(default_factory=set)
    last: str | None = None
    room: int = 0
    kinds: set[str] = field(default_factory=set)

    def warm(self, model: str) -> bool:
        return model in self.models or model == self.last


def eligible(worker: str, waiting: list[dict], views: dict[str, View], free: set[str]) -> list[dict]:
    """The waiting jobs `worker` may take: none that another free worker is better placed for."""
    me = views[worker]
    others = [views[w] for w in free if w != worker and w in views]
    mine = []
    for job in waiting:
        model = job["model"]
        if job["capability"] not in me.kinds:
            continue
        if me.warm(model):
            mine.append(job)
        elif any(o.warm(model) and job["capability"] in o.kinds for o in others):
            continue   # a free worker holds its model: that one takes it
        elif any(o.room > me.room and job["capability"] in o.kinds for o in others):
            continue   # nobody holds it: the free worker with the most room loads it
        else:
            mine.append(job)
    return mine


def pick(worker: str, waiting: list[dict], views: dict[str, View], free: set[str], *,
         policy: str = "grouped", max_passed_over: int = 4) -> tuple[dict | None, list[dict]]:
    """(the job `worker` takes or None, the jobs it passed over to take it)."""
    mine = eligible(worker, waiting, views, free)
    warm = {j["model"] for j in mine if views[worker].warm(j["model"])}
    # The same grouped rule as a thread of this process (engine/job_lanes.choose); a worker runs
    # one job at a time, so no model limit applies here.
    return choose(mine, {}, lambda model: 1, warm, policy, max_passed_over)


def head_only(waiting: list[dict], views: dict[str, View]) -> dict | None:
    """The oldest job no worker can run (a kind only the head has, such as a model download):
    the head's own job thread runs it."""
    kinds = set().union(*(v.kinds for v in views.values())) if views else set()
    return next((j for j in waiting if j["capability"] not in kinds), None)
