"""A fastText supervised classifier in torch: the rows of a line's words and character n-grams
averaged (an EmbeddingBag), then the hierarchical softmax over the labels, for every label at once.

The input ids follow fastText's Dictionary::getLine (src/dictionary.cc), byte for byte:
- a line is split into tokens on the bytes ' ', \\n, \\r, \\t, \\v, \\f and \\0, and ends with the
  end-of-sentence token "</s>" (fastText's Python predict() appends "\\n"); a token "</s>" in the
  text ends the line there, as in fastText;
- tokens starting with "__label__" are labels and are skipped;
- a known word gives its own row plus its character n-grams, an unknown one only the n-grams;
- the n-grams of "<token>" are every run of minn..maxn UTF-8 characters, hashed with 32-bit FNV-1a
  over *signed* bytes (fastText's documented quirk), modulo `bucket`; in a pruned (.ftz) model
  only the buckets in its prune index exist, at the rows it names.
Word n-grams (wordNgrams > 1) are not implemented: lid.176 has none; such a model is refused.

The hierarchical softmax follows HierarchicalSoftmaxLoss (src/loss.cc): a Huffman tree built from
the label counts; a label's score is the sum, along its path from the root, of log(p + 1e-5), p the
sigmoid of the node's output row (or 1 minus it, on a left turn); its probability exp(score).
fastText walks the tree depth-first and prunes; here every label is scored, which gives the same
top k (fastText also drops labels under its threshold: probability < threshold + 1e-5).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .fasttext_format import FastTextModel, NotAFastTextModel

EOS = b"</s>"
LABEL_PREFIX = b"__label__"
SEPARATORS = b" \n\r\t\v\f\0"
_SPLIT = bytes.maketrans(SEPARATORS, b" " * len(SEPARATORS))
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


def fnv1a(data: bytes) -> int:
    """fastText's Dictionary::hash: 32-bit FNV-1a over signed bytes (0x80.. count as negative)."""
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ (byte | 0xFFFFFF00 if byte & 0x80 else byte)) * FNV_PRIME) & 0xFFFFFFFF
    return h


def huffman_paths(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HierarchicalSoftmaxLoss::buildTree: per label, the internal nodes on its path to the root
    (as output rows), the turn taken at each (1: right, the sigmoid; 0: left) and a mask.
    Counts must be sorted from the largest down, as fastText's dictionary keeps them."""
    osz = len(counts)
    total = 2 * osz - 1
    count = np.full(total, 1e15)
    count[:osz] = counts
    parent = np.full(total, -1)
    binary = np.zeros(total, dtype=bool)
    leaf, node = osz - 1, osz
    for i in range(osz, total):
        pair = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                pair.append(leaf)
                leaf -= 1
            else:
                pair.append(node)
                node += 1
        count[i] = count[pair[0]] + count[pair[1]]
        parent[pair[0]] = parent[pair[1]] = i
        binary[pair[1]] = True
    walks = []
    for i in range(osz):
        steps, j = [], i
        while parent[j] != -1:
            steps.append((parent[j] - osz, binary[j]))
            j = parent[j]
        walks.append(steps)
    depth = max(len(w) for w in walks)
    nodes = np.zeros((osz, depth), dtype=np.int64)
    turns = np.zeros((osz, depth), dtype=np.float32)
    mask = np.zeros((osz, depth), dtype=np.float32)
    for i, steps in enumerate(walks):
        for d, (row, right) in enumerate(steps):
            nodes[i, d], turns[i, d], mask[i, d] = row, float(right), 1.0
    return nodes, turns, mask


class Vocabulary:
    """Text -> input rows, as fastText's dictionary computes them for one line."""

    def __init__(self, model: FastTextModel):
        args = model.args
        if args["model"] != "sup":
            raise NotAFastTextModel(f"a {args['model']} model gives word vectors, not labels")
        if args["wordNgrams"] > 1:
            raise NotAFastTextModel(f"word n-grams (wordNgrams {args['wordNgrams']}) are not supported")
        self.minn, self.maxn, self.bucket = args["minn"], args["maxn"], args["bucket"]
        self.nwords, self.rows = model.nwords, model.input.shape[0]
        self.pruneidx = model.pruneidx
        self.ids = {word: i for i, word in enumerate(model.words[:model.nwords])}
        expected = model.nwords + (len(model.pruneidx) if model.pruneidx is not None else self.bucket)
        if self.rows != expected:
            raise NotAFastTextModel(f"the input matrix has {self.rows} rows; the dictionary needs {expected}")
        self.token_rows = functools.lru_cache(maxsize=65536)(self._token_rows)

    def _ngram_rows(self, word: bytes) -> list[int]:
        """Dictionary::computeSubwords on "<word>" (bytes), then pushHash."""
        rows = []
        starts = [i for i, b in enumerate(word) if b & 0xC0 != 0x80]  # UTF-8 character starts
        ends = starts[1:] + [len(word)]
        for s in range(len(starts)):
            for n in range(1, self.maxn + 1):
                if s + n > len(starts):
                    break
                end = ends[s + n - 1]
                if n >= self.minn and not (n == 1 and (s == 0 or end == len(word))):
                    h = fnv1a(word[starts[s]:end]) % self.bucket
                    if self.pruneidx is None:
                        rows.append(self.nwords + h)
                    elif h in self.pruneidx:
                        rows.append(self.nwords + self.pruneidx[h])
        return rows

    def _token_rows(self, token: bytes) -> tuple[int, ...]:
        wid = self.ids.get(token)
        if token == EOS:
            return (wid,) if wid is not None else ()
        ngrams = self._ngram_rows(b"<" + token + b">") if self.maxn > 0 else []
        return tuple(([wid] if wid is not None else []) + ngrams)

    def line_rows(self, text: str) -> list[int]:
        """The input rows of one line of text. A newline counts as a space here: fastText's own
        predict() refuses text with one, so callers split lines first or join them."""
        rows = []
        for token in text.encode("utf-8", "replace").translate(_SPLIT).split(b" ") + [EOS]:
            if not token or token.startswith(LABEL_PREFIX):  # a label, never a word
                continue
            rows.extend(self.token_rows(token))
            if token == EOS:
                break
        return rows


class FastTextClassifier(nn.Module):
    """Input rows (EmbeddingBag, mean) -> hierarchical softmax log-probabilities of every label."""

    def __init__(self, model: FastTextModel):
        super().__init__()
        if model.args["loss"] != "hs":
            raise NotAFastTextModel(f"loss {model.args['loss']}: only the hierarchical softmax is supported")
        label_counts = model.counts[model.nwords:]
        if np.any(np.diff(label_counts) > 0):
            raise NotAFastTextModel("the labels are not sorted by count, as fastText saves them")
        self.bag = nn.EmbeddingBag.from_pretrained(torch.from_numpy(model.input.copy()), freeze=True, mode="mean")
        nodes, turns, mask = huffman_paths(label_counts)
        self.register_buffer("nodes_out", torch.from_numpy(model.output[:len(label_counts) - 1].copy()))
        self.register_buffer("path", torch.from_numpy(nodes))
        self.register_buffer("turn", torch.from_numpy(turns))
        self.register_buffer("mask", torch.from_numpy(mask))

    def forward(self, rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """rows: every line's input rows, one after another; offsets: where each line starts.
        Returns (lines, labels) scores: log(probability) as fastText reports it."""
        hidden = self.bag(rows, offsets)
        p = torch.sigmoid(hidden @ self.nodes_out.T)[:, self.path]   # (lines, labels, depth)
        p = torch.where(self.turn.bool(), p, 1.0 - p)
        return (torch.log(p + 1e-5) * self.mask).sum(-1)


def build(model: FastTextModel) -> tuple[Vocabulary, FastTextClassifier]:
    """The vocabulary and the torch classifier of a supervised fastText model."""
    return Vocabulary(model), FastTextClassifier(model).eval()
