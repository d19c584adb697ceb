"""overhead: a tiny torch model called directly vs through a lease with its run record.

The model (one 16x16 linear layer) is loaded once; then BLOCKS blocks of CALLS calls each way,
interleaved block by block (alternating which goes first) so both see the same machine load.
engine.infer does what every tab's call does: a run record (appended to runs.jsonl), a lease
from the pool, a memory probe (peak RSS) and OOM recovery around the call.

- direct_us, engine_us: per-call time, the median over blocks of each block's mean.
- overhead_us: engine_us - direct_us.
"""
from __future__ import annotations

import tempfile
import time

from .common import median, save_series

BLOCKS = 15
CALLS = 200


def run(verbose: bool = True, blocks: int = BLOCKS, calls: int = CALLS) -> dict:
    import torch

    from engine import Engine, ModelSpec

    torch.set_num_threads(1)  # a 16x16 matmul gains nothing from threads; fewer wake-ups, less noise
    engine = Engine(tempfile.mkdtemp(prefix="wimmel-bench-"), reserve=0, specs=[ModelSpec(
        name="tiny", role="interactive", runtime="torch", loader=lambda device: torch.nn.Linear(16, 16).eval(),
        source="built in memory", estimate_bytes=4096)])
    x = torch.ones(1, 16)

    def forward(model):
        with torch.inference_mode():
            return model(x)

    engine.infer("overhead", "tiny", forward)
    model = engine.pool._instances[0].model

    def direct_block() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            forward(model)
        return (time.perf_counter() - started) / calls

    def engine_block() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            engine.infer("overhead", "tiny", forward)
        return (time.perf_counter() - started) / calls

    direct_block(), engine_block()  # warm
    direct, via = [], []
    for b in range(blocks):
        pair = (direct_block, engine_block) if b % 2 == 0 else (engine_block, direct_block)
        for block in pair:
            (direct if block is direct_block else via).append(block())
        if verbose:
            print(f"block {b + 1}: direct {direct[-1] * 1e6:.1f} us, engine {via[-1] * 1e6:.1f} us", flush=True)
    save_series("overhead", {"direct_us": [round(v * 1e6, 2) for v in direct],
                             "engine_us": [round(v * 1e6, 2) for v in via]})
    direct_us, engine_us = median(direct) * 1e6, median(via) * 1e6
    return {"scenario": "overhead", "direct_us": round(direct_us, 1), "engine_us": round(engine_us, 1),
            "overhead_us": round(engine_us - direct_us, 1), "calls": blocks * calls}
