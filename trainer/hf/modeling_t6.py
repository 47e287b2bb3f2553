"""T6 (Tensor Product Attention) for Hugging Face transformers, as t6-export writes it.

Loaded with `AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)` from a folder
written by the T6 trainer's `t6-export CKPT --out DIR`. The math is the trainer's (docs/model.md
of the T6 trainer): RMSNorm without a learned scale (eps = float32's epsilon), no biases, RoPE in
the halves convention on B_q and B_k (TPA) or on the dense q and k, causal softmax attention,
SwiGLU MLP, the output head tied to the embedding. Every attention variant: tpa, tpa_kvonly,
mha, gqa, mqa. Parameter names are those of model.safetensors (`transformer.h.{i}.attn...`).

generate() works with and without use_cache, but this module keeps no key/value cache: each
step runs the whole sequence again (prepare_inputs_for_generation). The trainer's `t6-generate`
decodes from TPA's factorized cache instead.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
import transformers
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

VARIANTS = ("tpa", "tpa_kvonly", "mha", "gqa", "mqa")


class T6Config(PretrainedConfig):
    model_type = "t6"
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head"}

    def __init__(self, attention="tpa", vocab_size=50304, n_layer=12, n_embd=768, n_head=34, head_dim=64,
                 q_rank=6, rank=2, k_rank=None, v_rank=None, n_kv_head=None, block_size=1024, **kwargs):
        if attention not in VARIANTS:
            raise ValueError(f"attention '{attention}': expected one of {', '.join(VARIANTS)}")
        self.attention = attention
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.n_head, self.head_dim, self.block_size = n_head, head_dim, block_size
        self.q_rank, self.rank = q_rank, rank
        self.k_rank = k_rank if k_rank is not None else rank
        self.v_rank = v_rank if v_rank is not None else rank
        if n_kv_head is None:
            n_kv_head = 1 if attention == "mqa" else n_head
        self.n_kv_head = n_kv_head
        self.max_position_embeddings = kwargs.pop("max_position_embeddings", block_size)
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(**kwargs)


def rms_norm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)


def rope_angles(positions, D):
    """cos and sin (..., D/2) at integer positions: the angle in fp32, cos and sin in double."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32, device=positions.device) / D))
    angle = positions.to(torch.float32)[..., None] * inv_freq
    return angle.double().cos().float(), angle.double().sin().float()


def rotate(x, cos, sin):
    """x (B, T, rows, D) by −θ: (x₁cos + x₂sin, −x₁sin + x₂cos); cos, sin (B, T, D/2)."""
    half = x.shape[-1] // 2
    c, s = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * c + x2 * s, -x1 * s + x2 * c), dim=-1)


class T6Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, H, D = config.n_embd, config.n_head, config.head_dim
        self.variant, self.H, self.D = config.attention, H, D
        self.Hkv = {"mha": H, "gqa": config.n_kv_head, "mqa": 1}.get(config.attention, H)
        self.ranks = (config.q_rank, config.k_rank, config.v_rank)
        linear = lambda n_out: nn.Linear(C, n_out, bias=False)  # noqa: E731
        if self.variant in ("tpa", "tpa_kvonly"):
            self.c_qkv = nn.Module()
            if self.variant == "tpa":
                self.c_qkv.W_A_q, self.c_qkv.W_B_q = linear(H * config.q_rank), linear(config.q_rank * D)
            else:
                self.c_qkv.c_q = linear(H * D)
            self.c_qkv.W_A_k, self.c_qkv.W_B_k = linear(H * config.k_rank), linear(config.k_rank * D)
            self.c_qkv.W_A_v, self.c_qkv.W_B_v = linear(H * config.v_rank), linear(config.v_rank * D)
        else:
            self.c_q, self.c_k, self.c_v = linear(H * D), linear(self.Hkv * D), linear(self.Hkv * D)
        self.c_proj = nn.Linear(H * D, C, bias=False)

    def factored(self, h, which, rank, cos, sin):
        """(1/R)·Σ_r A[head, r]·B[r]: A (B, T, H, R) and B (B, T, R, D), B rotated for q and k."""
        B, T = h.shape[:2]
        a = getattr(self.c_qkv, f"W_A_{which}")(h).view(B, T, self.H, rank)
        b = getattr(self.c_qkv, f"W_B_{which}")(h).view(B, T, rank, self.D)
        if which != "v":
            b = rotate(b, cos, sin)
        return torch.matmul(a, b) / rank

    def forward(self, h, cos, sin, key_mask):
        B, T = h.shape[:2]
        H, D = self.H, self.D
        if self.variant in ("tpa", "tpa_kvonly"):
            if self.variant == "tpa":
                q = self.factored(h, "q", self.ranks[0], cos, sin)
            else:
                q = rotate(self.c_qkv.c_q(h).view(B, T, H, D), cos, sin)
            k = self.factored(h, "k", self.ranks[1], cos, sin)
            v = self.factored(h, "v", self.ranks[2], cos, sin)
        else:
            q = rotate(self.c_q(h).view(B, T, H, D), cos, sin)
            k = rotate(self.c_k(h).view(B, T, self.Hkv, D), cos, sin)
            v = self.c_v(h).view(B, T, self.Hkv, D)
            if self.Hkv != H:  # query head j reads key/value head j // (H / Hkv)
                k = k.repeat_interleave(H // self.Hkv, dim=2)
                v = v.repeat_interleave(H // self.Hkv, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(D)
        allowed = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        if key_mask is not None:  # padding keys (attention_mask 0) are never read
            allowed = allowed & key_mask[:, None, None, :].bool()
        scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a padding query may see no key at all
        y = torch.matmul(p, v.float()).to(h.dtype)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, H * D))


class T6MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, Fw = config.n_embd, 8 * config.n_embd // 3
        self.c_fc1, self.c_fc2 = nn.Linear(C, Fw, bias=False), nn.Linear(C, Fw, bias=False)
        self.c_proj = nn.Linear(Fw, C, bias=False)

    def forward(self, h):
        return self.c_proj(F.silu(self.c_fc1(h)) * self.c_fc2(h))


class T6Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn, self.mlp = T6Attention(config), T6MLP(config)

    def forward(self, x, cos, sin, key_mask):
        x = x + self.attn(rms_norm(x), cos, sin, key_mask)
        return x + self.mlp(rms_norm(x))


class T6ForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = T6Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = False
    _no_split_modules = ["T6Block"]  # device_map="auto" (transformers 4 requires it)
    # The output head is the embedding matrix, stored once (as transformer.wte.weight). The form
    # of this declaration changed in transformers 5.
    if int(transformers.__version__.split(".")[0]) >= 5:
        _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    else:
        _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.transformer.h = nn.ModuleList(T6Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        pass  # the weights come from the trainer's checkpoint

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, return_dict=None,
                **kwargs):
        B, T = input_ids.shape
        if position_ids is None:
            if attention_mask is not None:  # left padding: each sequence counts from its first token
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = rope_angles(position_ids, self.config.head_dim)
        x = self.transformer.wte(input_ids)
        for block in self.transformer.h:
            x = block(x, cos, sin, attention_mask)
        logits = self.lm_head(rms_norm(x)).float()
        loss = None
        if labels is not None:  # next-token loss, positions labelled −100 ignored
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=None)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No cache: the whole sequence every step, so whatever cache object generate() makes
        # (it differs between transformers versions) is never read.
        return {"input_ids": input_ids, "attention_mask": attention_mask}
