"""musicnn's networks in torch, with the weights of the musicnn 0.1.0 wheel's TF1 checkpoints.

Facts from the wheel's musicnn/models.py, configuration.py and extractor.py (Pons & Serra 2019):
- input: log10(10000 * mel + 1) of librosa's power mel spectrogram (16 kHz, n_fft 512, hop 256,
  96 bands, centred frames), cast to float16 first, in patches of 187 frames (3 s), [B, 187, 96];
- musicnn: batch norm on the input; front end of two timbral convs (7 x 38 and 7 x 67 over
  time x mel, 204 filters, time padded by 3) and three temporal convs (128, 64, 32 x 1, 51
  filters, TF 'same' padding), each conv -> relu -> batch norm -> max over the mel axis; mid end
  of three 7-frame convs (64 filters) with residual sums, all front- and mid-end features
  concatenated (561 + 3 x 64 = 753); back end: max and mean over time, interleaved per feature
  as TF's flatten of [753, 2] lays them out, batch norm, dense 200 + relu, batch norm, dense 50;
- vgg: batch norm on the input, five 3 x 3 convs (128 filters, 'same') each -> relu -> batch norm
  -> max pool ([4, 1] stride 2, then 2 x 2, 2 x 2, 2 x 2, 4 x 4), flatten in NHWC order, dense 50;
- tags: sigmoid of the logits; batch norm epsilon 0.001 (tf.layers' default).
TF keeps kernels as [kh, kw, in, out] and tensors channels-last; the mapping is below.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187  # librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
EPS = 1e-3
FLOAT16_MAX = float(np.finfo(np.float16).max)


# ---------------------------------------------------------------------------------- features

_MEL: dict[str, np.ndarray] = {}


def mel_basis() -> np.ndarray:
    """librosa's mel filters as melspectrogram builds them (slaney scale and norm, fmax = sr / 2)."""
    if "mel" not in _MEL:
        import librosa

        _MEL["mel"] = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
    return _MEL["mel"]


def frames_power(samples: np.ndarray) -> np.ndarray:
    """|STFT|^2 of frames laid out with no padding: frame k covers samples[k*HOP : k*HOP + N_FFT].
    [frames, 257]. The caller supplies the context (and the start's reflect padding)."""
    samples = np.asarray(samples, np.float32)
    count = 1 + (samples.size - N_FFT) // HOP
    if count <= 0:
        return np.zeros((0, N_FFT // 2 + 1), np.float32)
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as scipy's 'hann' in librosa
    spectrum = np.fft.rfft(samples[index] * window, axis=1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)


def log_mel(power: np.ndarray) -> np.ndarray:
    """[frames, 257] power -> [frames, 96] inputs: mel, float16 as the extractor casts it (values
    past float16's range clipped to it rather than made inf), then log10(10000 x + 1)."""
    mel = power @ mel_basis().T
    mel = np.minimum(mel, FLOAT16_MAX).astype(np.float16).astype(np.float32)
    return np.log10(10000.0 * mel + 1.0).astype(np.float32)


def reference_log_mel(samples: np.ndarray) -> np.ndarray:
    """The whole clip at once through librosa itself (extractor.batch_data with the reflect
    padding of the librosa it was trained with): the check on our framing. [frames, 96]."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(samples, np.float32), sr=SAMPLE_RATE, hop_length=HOP,
                                         n_fft=N_FFT, n_mels=N_MELS, pad_mode="reflect").T
    # numpy 1.x (2019) promoted float16 * 10000 to float32 (value-based casting): no overflow.
    quantised = np.minimum(mel, FLOAT16_MAX).astype(np.float16).astype(np.float32)
    return np.log10(10000 * quantised + 1).astype(np.float32)


# ---------------------------------------------------------------------------------- layers

def _bn(tensors: dict, name: str) -> nn.BatchNorm1d:
    """A tf.layers batch norm (inference: moving mean and variance) as torch's."""
    gamma = tensors[f"{name}/gamma"]
    layer = nn.BatchNorm1d(gamma.shape[0], eps=EPS)
    layer.weight.data = torch.from_numpy(gamma.copy())
    layer.bias.data = torch.from_numpy(tensors[f"{name}/beta"].copy())
    layer.running_mean = torch.from_numpy(tensors[f"{name}/moving_mean"].copy())
    layer.running_var = torch.from_numpy(tensors[f"{name}/moving_variance"].copy())
    return layer


def _conv2d(tensors: dict, name: str, padding=0) -> nn.Conv2d:
    kernel = torch.from_numpy(tensors[f"{name}/kernel"].copy()).permute(3, 2, 0, 1)  # [out, in, kh, kw]
    layer = nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]), padding=padding)
    layer.weight.data = kernel.contiguous()
    layer.bias.data = torch.from_numpy(tensors[f"{name}/bias"].copy())
    return layer


def _conv1d(tensors: dict, name: str) -> nn.Conv1d:
    """musicnn's mid-end conv: a [7, channels] kernel over [time, channels, 1], i.e. a 1-D conv
    over time with `channels` inputs; TF [7, c, 1, out] -> torch [out, c, 7]; time padded by 3."""
    kernel = torch.from_numpy(tensors[f"{name}/kernel"].copy())[:, :, 0, :].permute(2, 1, 0)
    layer = nn.Conv1d(kernel.shape[1], kernel.shape[0], kernel.shape[2], padding=3)
    layer.weight.data = kernel.contiguous()
    layer.bias.data = torch.from_numpy(tensors[f"{name}/bias"].copy())
    return layer


def _dense(tensors: dict, name: str) -> nn.Linear:
    kernel = torch.from_numpy(tensors[f"{name}/kernel"].copy())  # [in, out]
    layer = nn.Linear(kernel.shape[0], kernel.shape[1])
    layer.weight.data = kernel.T.contiguous()
    layer.bias.data = torch.from_numpy(tensors[f"{name}/bias"].copy())
    return layer


def _channels(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """Batch norm over dim 1 of a 4-D tensor, as BatchNorm1d over [B, C, L]."""
    b, c, h, w = x.shape
    return bn(x.reshape(b, c, h * w)).reshape(b, c, h, w)


# ---------------------------------------------------------------------------------- musicnn

class Musicnn(nn.Module):
    """[B, 187, 96] log-mel patches -> [B, 50] tag probabilities (build_musicnn, 64 mid-end filters,
    200 back-end units). Checkpoint names follow TF's creation order, as listed below."""

    TEMPORAL = (128, 64, 32)  # kernel lengths of conv2d_2, _3, _4

    def __init__(self, t: dict):
        super().__init__()
        self.bn_input = _bn(t, "batch_normalization")
        self.timbral = nn.ModuleList([_conv2d(t, "conv2d"), _conv2d(t, "conv2d_1")])
        self.temporal = nn.ModuleList([_conv2d(t, f"conv2d_{i}") for i in (2, 3, 4)])
        self.bn_front = nn.ModuleList([_bn(t, f"batch_normalization_{i}") for i in (1, 2, 3, 4, 5)])
        self.mid = nn.ModuleList([_conv1d(t, f"conv2d_{i}") for i in (5, 6, 7)])
        self.bn_mid = nn.ModuleList([_bn(t, f"batch_normalization_{i}") for i in (6, 7, 8)])
        self.bn_pool = _bn(t, "batch_normalization_9")
        self.dense = _dense(t, "dense")
        self.bn_dense = _bn(t, "batch_normalization_10")
        self.out = _dense(t, "dense_1")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = _channels(patches.unsqueeze(1), self.bn_input)  # [B, 1, T, 96]
        front = []
        padded = F.pad(x, (0, 0, 3, 3))  # time only: the timbral convs are 'valid' over mel
        for conv, bn in zip(self.timbral, self.bn_front[:2]):
            front.append(_channels(F.relu(conv(padded)), bn).amax(dim=3))  # [B, 204, T]
        for conv, k, bn in zip(self.temporal, self.TEMPORAL, self.bn_front[2:]):
            # TF 'same' with an even kernel pads (k - 1) // 2 before and the rest after.
            same = F.pad(x, (0, 0, (k - 1) // 2, k // 2))
            front.append(_channels(F.relu(conv(same)), bn).amax(dim=3))  # [B, 51, T]
        features = [torch.cat(front, dim=1)]  # [B, 561, T]
        for i, (conv, bn) in enumerate(zip(self.mid, self.bn_mid)):
            y = bn(F.relu(conv(features[-1])))
            features.append(y if i == 0 else y + features[-1])  # residual from the second on
        mid = torch.cat(features, dim=1)  # [B, 753, T]
        pooled = torch.stack([mid.amax(dim=2), mid.mean(dim=2)], dim=2).flatten(1)  # max, mean per feature
        hidden = self.bn_dense(F.relu(self.dense(self.bn_pool(pooled))))
        return torch.sigmoid(self.out(hidden))


# ---------------------------------------------------------------------------------- vgg

class Vgg(nn.Module):
    """[B, 187, 96] -> [B, 50]: the wheel's vgg (128 filters)."""

    POOLS = ((4, 1), (2, 2), (2, 2), (2, 2), (4, 4))
    STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (4, 4))

    def __init__(self, t: dict):
        super().__init__()
        self.bn_input = _bn(t, "batch_normalization")
        self.convs = nn.ModuleList([_conv2d(t, f"{i}CNN", padding=1) for i in range(1, 6)])
        self.bns = nn.ModuleList([_bn(t, f"batch_normalization_{i}") for i in range(1, 6)])
        self.out = _dense(t, "dense")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = _channels(patches.unsqueeze(1), self.bn_input)
        for conv, bn, pool, stride in zip(self.convs, self.bns, self.POOLS, self.STRIDES):
            x = F.max_pool2d(_channels(F.relu(conv(x)), bn), pool, stride)
        return torch.sigmoid(self.out(x.permute(0, 2, 3, 1).flatten(1)))  # NHWC flatten, as TF
