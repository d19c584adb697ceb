"""DeepFilterNet3 on ONNX Runtime: the model's three graphs (enc, erb_dec, df_dec from
DeepFilterNet3_onnx.tar.gz) made to stream, with libDF's DSP around them (deepfilter_dsp.py).

The exported graphs take whole sequences and start from zeros: each GRU's initial state is a
ConstantOfShape, each convolution that looks back in time is fed through a Pad of zeros. libDF's
tract runtime "pulses" them into one-frame steps that keep those as hidden state. Here the same is
done to the graphs before they are loaded: each GRU's initial state becomes an input and its last
state an output, and each such Pad is removed so that the caller prepends the frames the
convolution looks back on (zeros at the start of a stream, the previous frames after). A stream
then runs in batches of any size, and its output is the same as in one piece (float rounding
aside) and the same as libDF's frame-by-frame output.
"""
from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import numpy as np

from .deepfilter_dsp import Config, FrameState

GRAPHS = ("enc", "erb_dec", "df_dec")
# Frames per run of the graphs: the GRUs step through them one by one whatever the batch, so a
# bigger one saves little time (measured: 1000 frames ~10% faster than 200) but ONNX Runtime's
# arena keeps its peak (~+70 MiB at 200 frames, +320 MiB at 1000).
BATCH_FRAMES = 200
STATE_IN, STATE_OUT = "h", "h_out"


@functools.lru_cache(maxsize=2)
def read_tarball(path: str) -> tuple[str, dict[str, bytes]]:
    """(config.ini's text, {graph name: ONNX bytes}) from the model's tar.gz."""
    graphs, config = {}, None
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name == "config.ini":
                config = tar.extractfile(member).read().decode()
            elif name.endswith(".onnx") and name[:-5] in GRAPHS:
                graphs[name[:-5]] = tar.extractfile(member).read()
    missing = [g for g in GRAPHS if g not in graphs] + ([] if config else ["config.ini"])
    if missing:
        raise RuntimeError(f"{path} lacks {', '.join(missing)}")
    return config, graphs


def streaming_graph(model_bytes: bytes, drop_outputs: tuple[str, ...] = ()) -> tuple[bytes, dict[str, int]]:
    """The graph with its GRU state as input STATE_IN (layers, 1, hidden) and output STATE_OUT,
    and without the zero Pads in time on its inputs. Returns (ONNX bytes, {input: frames of
    history the caller prepends to it})."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inputs = {i.name for i in graph.input}
    consumers = lambda name: [n for n in graph.node if name in n.input]  # noqa: E731
    history: dict[str, int] = {}
    for pad in [n for n in graph.node if n.op_type == "Pad" and n.input[0] in inputs]:
        convs = consumers(pad.output[0])
        kernel = [a.ints for c in convs for a in c.attribute if a.name == "kernel_shape"]
        if len(convs) != 1 or convs[0].op_type != "Conv" or not kernel:
            raise RuntimeError(f"unexpected Pad on {pad.input[0]}: not a convolution's padding")
        # The export pads time by kernel-1 frames before the start (causal); the caller now does.
        history[pad.input[0]] = kernel[0][0] - 1
        convs[0].input[0] = pad.input[0]
        graph.node.remove(pad)
        for i in graph.input:
            if i.name == pad.input[0]:
                i.type.tensor_type.shape.dim[2].dim_param = f"S_{i.name}"  # longer than S now
    grus = [n for n in graph.node if n.op_type == "GRU"]
    zeros = {n.output[0]: n for n in graph.node if n.op_type == "ConstantOfShape"}
    hidden = next(a.i for a in grus[0].attribute if a.name == "hidden_size")
    sources = set()
    for gru in grus:  # the initial state is the ConstantOfShape itself, or a Slice of it per layer
        h0 = gru.input[5]
        producer = next((n for n in graph.node if h0 in n.output), None)
        if producer is not None and producer.op_type == "Slice":
            h0 = producer.input[0]
        if h0 not in zeros:
            raise RuntimeError("a GRU's initial state is not the zeros the export makes")
        sources.add(h0)
    if len(sources) != 1:
        raise RuntimeError("the GRUs' initial states do not come from one tensor")
    source = sources.pop()
    graph.node.remove(zeros[source])
    for node in graph.node:
        node.input[:] = [STATE_IN if i == source else i for i in node.input]
    graph.input.append(helper.make_tensor_value_info(STATE_IN, TensorProto.FLOAT, [len(grus), 1, hidden]))
    graph.node.append(helper.make_node("Concat", [g.output[1] for g in grus], [STATE_OUT], axis=0))
    graph.output.append(helper.make_tensor_value_info(STATE_OUT, TensorProto.FLOAT, [len(grus), 1, hidden]))
    for out in [o for o in graph.output if o.name in drop_outputs]:
        graph.output.remove(out)
    _prune(graph)
    return model.SerializeToString(), history


def _prune(graph) -> None:
    """Drop the nodes no output depends on any more (the Pads' and the zeros' shape arithmetic)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    for node in [n for n in graph.node if n not in keep]:
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)


class DeepFilterNet3:
    """One stream's DeepFilterNet3: process() takes whole hops (480 samples at 48 kHz) and gives
    as many samples out, lagging the input by fft_size - hop + conv_lookahead hops (1440 samples)
    as libDF does; reset() starts a new stream (no graph is rebuilt)."""

    def __init__(self, tarball: str | Path, device: str = "cpu", atten_lim_db: float = 100.0):
        from engine.runtimes import onnx_runtime

        config, graphs = read_tarball(str(tarball))
        self.cfg = Config.from_ini(config)
        self.dsp = FrameState(self.cfg)
        lim = abs(atten_lim_db)  # tract.rs: 100 dB or more is no limit; under 0.01 dB, no change
        self.atten_lim = None if lim >= 100 else 1.0 if lim < 0.01 else float(10 ** (-lim / 20))
        self.sessions, self.history, self.state_shape = {}, {}, {}
        # The shape changes with every batch: cuDNN's exhaustive search would rerun each time.
        cuda = {"cudnn_conv_algo_search": "HEURISTIC"}
        # One thread: the GRUs step frame by frame, too little work per step to share; measured on
        # 2 busy cores, 30 s of audio took a median 0.9 s on one thread, 4.8 s on two.
        for name in GRAPHS:
            drop = ("235",) if name == "df_dec" else ()  # df_dec's DF alpha: libDF does not use it
            model, self.history[name] = streaming_graph(graphs[name], drop)
            self.sessions[name] = onnx_runtime.session(model, device, threads=1, cuda_options=cuda)
            self.state_shape[name] = tuple(self.sessions[name].get_inputs()[-1].shape)  # (layers, 1, hidden)
        # The synthesis overlap (fft_size - hop) plus the frames the network looks ahead.
        self.delay = self.cfg.fft_size - self.cfg.hop_size + self.cfg.conv_lookahead * self.cfg.hop_size
        self.reset()

    def reset(self) -> None:
        self.dsp.reset()
        self.state = {name: np.zeros(self.state_shape[name], np.float32) for name in GRAPHS}
        self.past = {}  # input name -> the frames its convolution looks back on

    def _with_past(self, name: str, graph: str, x: np.ndarray) -> np.ndarray:
        """x (1, channels, frames, bins) with the frames before it prepended (zeros at first)."""
        n = self.history[graph][name]
        past = self.past.get(name)
        if past is None:
            past = np.zeros(x.shape[:2] + (n,) + x.shape[3:], np.float32)
        joined = np.concatenate([past, x], axis=2)
        self.past[name] = joined[:, :, joined.shape[2] - n:]
        return joined

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        feeds = {k: self._with_past(k, graph, v) if k in self.history[graph] else v for k, v in feeds.items()}
        feeds[STATE_IN] = self.state[graph]
        names = [o.name for o in session.get_outputs()]
        out = dict(zip(names, session.run(names, feeds)))
        self.state[graph] = out.pop(STATE_OUT)
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        """The next len(x) output samples (len(x) a multiple of the hop), in batches of at most
        BATCH_FRAMES frames."""
        x = np.asarray(x, np.float32)
        step = BATCH_FRAMES * self.cfg.hop_size
        if len(x) <= step:
            return self._batch(x)
        return np.concatenate([self._batch(x[i:i + step]) for i in range(0, len(x), step)])

    def _batch(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, np.float32)
        cfg = self.cfg
        spec = self.dsp.analysis(x)
        feat_erb, feat_spec = self.dsp.features(spec)
        enc = self._run("enc", {"feat_erb": feat_erb[None, None],
                                "feat_spec": np.ascontiguousarray(feat_spec.transpose(1, 0, 2)[None])})
        gains = self._run("erb_dec", {k: enc[k] for k in ("emb", "e3", "e2", "e1", "e0")})["m"][0, 0]
        coefs = self._run("df_dec", {"emb": enc["emb"], "c0": enc["c0"]})["coefs"][0]
        coefs = coefs.reshape(len(spec), cfg.nb_df, cfg.df_order, 2)  # tract.rs: [nb_df, df_order, re/im]
        coefs = coefs[..., 0] + 1j * coefs[..., 1]
        enhanced = self.dsp.enhance(spec, gains, coefs.astype(np.complex64), self.atten_lim)
        return self.dsp.synthesis(enhanced)
