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
