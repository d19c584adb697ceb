import os
import sys
from pathlib import Path

import pytest

# No network in tests: a hub lookup must fail at once rather than retry for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def call(engine):
    """Lease a model as a tab's run does (run.call), one run per call, on the module's `engine`."""
    return lambda model, fn, **kwargs: engine.infer("test", model, fn, **kwargs)


def pytest_configure(config):
    # `python -m bench gpu` runs these on a GPU machine (`pytest -m gpu tests/`): each exercises
    # the GPU path where one works, and the CPU path or a clear refusal where none does.
    config.addinivalue_line("markers", "gpu: runs on the GPU where there is one (the device check runs these)")
