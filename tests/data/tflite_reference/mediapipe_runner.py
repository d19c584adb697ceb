"""Runs one .tflite model of the mediapipe wheel on MediaPipe's own runtime (its bundled TFLite
interpreter with MediaPipe's custom ops, TfLiteCustomOpResolverCalculator) and saves its outputs:
the reference for the models LiteRT cannot run (face_landmark_with_attention). Called by
make_reference.py in a separate process, with the wheel's site-packages as working directory
(MediaPipe resolves model paths against it):

    python mediapipe_runner.py image_uint8.npy mediapipe/modules/.../model.tflite OUTPUTS out.npz

The image (h, w, 3 uint8) is the model's input size already: ImageToTensorCalculator then maps it
to the tensor unchanged but for the [0, 1] scaling (x / 255), which is what make_reference feeds
the torch rebuild. Needs the mediapipe wheel importable (numpy 2 works for this; matplotlib, used
only by its drawing helpers, is stubbed).
"""
import sys
import types

import numpy as np

sys.modules.setdefault("matplotlib", types.ModuleType("matplotlib"))
sys.modules.setdefault("matplotlib.pyplot", types.ModuleType("matplotlib.pyplot"))

import mediapipe as mp  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from mediapipe.calculators.core import split_vector_calculator_pb2  # noqa: E402,F401 - options
from mediapipe.calculators.tensor import image_to_tensor_calculator_pb2, inference_calculator_pb2  # noqa: E402,F401
from mediapipe.framework import calculator_pb2  # noqa: E402
from mediapipe.python import packet_creator, packet_getter  # noqa: E402
from mediapipe.python._framework_bindings import calculator_graph  # noqa: E402

_GRAPH = """
input_stream: "image"
{outputs}
node {{ calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" output_stream: "TENSORS:input"
  options {{ [mediapipe.ImageToTensorCalculatorOptions.ext] {{ output_tensor_width: {w}
    output_tensor_height: {h} keep_aspect_ratio: false output_tensor_float_range {{ min: 0.0 max: 1.0 }} }} }} }}
node {{ calculator: "TfLiteCustomOpResolverCalculator" output_side_packet: "OP_RESOLVER:op_resolver" }}
node {{ calculator: "InferenceCalculator" input_stream: "TENSORS:input" output_stream: "TENSORS:output"
  input_side_packet: "OP_RESOLVER:op_resolver"
  options {{ [mediapipe.InferenceCalculatorOptions.ext] {{ model_path: "{model}" delegate {{ tflite {{}} }} }} }} }}
node {{ calculator: "SplitTensorVectorCalculator" input_stream: "output" {splits}
  options {{ [mediapipe.SplitVectorCalculatorOptions.ext] {{ {ranges} }} }} }}
{floats}
"""


def run(image: np.ndarray, model: str, count: int) -> list[np.ndarray]:
    config = _GRAPH.format(
        outputs="\n".join(f'output_stream: "f{k}"' for k in range(count)), w=image.shape[1],
        h=image.shape[0], model=model, splits=" ".join(f'output_stream: "t{k}"' for k in range(count)),
        ranges=" ".join(f"ranges {{ begin: {k} end: {k + 1} }}" for k in range(count)),
        floats="\n".join(f'node {{ calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:t{k}" '
                         f'output_stream: "FLOATS:f{k}" }}' for k in range(count)))
    graph = calculator_graph.CalculatorGraph(
        graph_config=text_format.Parse(config, calculator_pb2.CalculatorGraphConfig()))
    results = {}
    for k in range(count):
        graph.observe_output_stream(
            f"f{k}", lambda _, packet, k=k: results.__setitem__(k, np.array(packet_getter.get_float_list(packet))))
    graph.start_run()
    frame = packet_creator.create_image_frame(image_format=mp.ImageFormat.SRGB, data=image)
    graph.add_packet_to_input_stream("image", frame.at(0))
    graph.close()
    return [results[k].astype(np.float32) for k in range(count)]


if __name__ == "__main__":
    image_path, model_path, outputs, target = sys.argv[1:5]
    np.savez(target, *run(np.load(image_path), model_path, int(outputs)))
