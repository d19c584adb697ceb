"""Two runtimes (issue 14): every network runs on torch or ONNX Runtime, and a model on any other
runtime says why in its spec (the System tab and the README show the reason). The runtimes that
were converted away stay away: no product module imports them."""
from __future__ import annotations

import pytest

from engine import ModelSpec
from engine.models import TWO_RUNTIMES
from tabs.catalog import default_specs
from test_layout import imports, module_name, sources

# LiteRT (the selfie model), ncnn (Real-ESRGAN): converted to torch / ONNX Runtime.
GONE = {"ai_edge_litert", "tflite_runtime", "tensorflow", "ncnn"}


def test_every_spec_runs_on_the_two_runtimes_or_says_why():
    specs = default_specs()
    assert len(specs) >= 16
    others = {s.name: (s.runtime, s.runtime_reason) for s in specs if s.runtime not in TWO_RUNTIMES}
    assert all(len(reason) > 40 for _, reason in others.values()), others
    # The exceptions allowed today: Whisper on CTranslate2, RNNoise's C library and spaCy on thinc.
    assert {runtime for runtime, _ in others.values()} <= {"ctranslate2", "ctypes", "thinc"}, others


def test_a_third_runtime_without_a_reason_is_refused():
    with pytest.raises(ValueError, match="runtime_reason"):
        ModelSpec(name="x", role="micro", runtime="other", loader=lambda device: None, source="here",
                  estimate_bytes=1)
    ModelSpec(name="x", role="micro", runtime="other", loader=lambda device: None, source="here",
              estimate_bytes=1, runtime_reason="a reason")


def test_no_module_imports_a_runtime_that_was_converted_away():
    found = {module_name(p): sorted(m for m in imports(p) if m.split(".")[0] in GONE) for p in sources()}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_one_network_per_function_and_the_count():
    specs = default_specs()
    functions = [s.function for s in specs]
    assert all(len(f) > 5 for f in functions), [s.name for s in specs if len(s.function) <= 5]
    assert len(set(functions)) == len(functions), sorted(functions)
    assert all(s.networks >= 1 for s in specs)
    assert sum(s.networks for s in specs) >= 26
