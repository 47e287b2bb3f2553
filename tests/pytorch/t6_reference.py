"""An independent PyTorch implementation of T6 (docs/model.md), used to check that
weights exported by t6-export load in PyTorch and give the loss t6-eval reports, and that weights
written from PyTorch load back into t6.

usage: t6_reference.py EXPORT_DIR TEXT_FILE BLOCK_SIZE [--write-back OUT.safetensors]
Prints the mean loss over every window of BLOCK_SIZE+1 byte tokens (stride BLOCK_SIZE) of
TEXT_FILE's bytes followed by end-of-text 0: the validation split that
`t6-prepare --tokenizer byte` makes of that file.

usage: t6_reference.py benchmark CONFIG.yaml [--steps N]
Times training steps of the same model on a GPU with the authors' recipe (module T6 below:
separate nn.Linear factor projections as in their code, torch.compile, bf16 autocast,
F.scaled_dot_product_attention(is_causal=True), fused AdamW, gradient clipping), with the
config's micro-batch, accumulation and block size on random tokens, and prints a line
`pytorch_benchmark tokens_per_sec ms_per_step` (medians after 3 warm-up steps).
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", info["dtype"]
        begin, end = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[begin:end], dtype="<f4").copy()).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        b = t.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def rms_norm(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)


def rope_tables(T, D):  # cos and sin of position × frequency, shaped (1, T, 1, D/2)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    angle = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    return angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]


def rope(x):  # x: (B, T, rows, D); rotation by -theta, halves convention
    T, D = x.shape[1], x.shape[-1]
    cos, sin = rope_tables(T, D)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1)


def forward_loss(W, cfg, tokens, targets):
    B, T = tokens.shape
    C, H, D, L = cfg["n_embd"], cfg["n_head"], cfg["head_dim"], cfg["n_layer"]
    att = cfg["attention"]
    x = W["transformer.wte.weight"][tokens]
    for i in range(L):
        p = f"transformer.h.{i}."
        h = rms_norm(x)

        def factored(kind, heads, R, rotate):
            A = (h @ W[p + f"attn.c_qkv.W_A_{kind}.weight"].T).view(B, T, heads, R)
            Bf = (h @ W[p + f"attn.c_qkv.W_B_{kind}.weight"].T).view(B, T, R, D)
            if rotate:
                Bf = rope(Bf)
            return torch.einsum("bthr,btrd->bthd", A, Bf) / R

        if att == "tpa":
            q = factored("q", H, cfg["q_rank"], True)
        else:
            name = "attn.c_qkv.c_q.weight" if att == "tpa_kvonly" else "attn.c_q.weight"
            q = rope((h @ W[p + name].T).view(B, T, H, D))
        if att in ("tpa", "tpa_kvonly"):
            rk, rv = cfg.get("k_rank", cfg["rank"]), cfg.get("v_rank", cfg["rank"])
            k, v = factored("k", H, rk, True), factored("v", H, rv, False)
        else:
            hkv = cfg.get("n_kv_head", H)
            k = rope((h @ W[p + "attn.c_k.weight"].T).view(B, T, hkv, D))
            v = (h @ W[p + "attn.c_v.weight"].T).view(B, T, hkv, D)
            k, v = k.repeat_interleave(H // hkv, dim=2), v.repeat_interleave(H // hkv, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-1, -2)) / D ** 0.5
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + y @ W[p + "attn.c_proj.weight"].T
        h = rms_norm(x)
        g = F.silu(h @ W[p + "mlp.c_fc1.weight"].T) * (h @ W[p + "mlp.c_fc2.weight"].T)
        x = x + g @ W[p + "mlp.c_proj.weight"].T
    logits = rms_norm(x) @ W["transformer.wte.weight"].T
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def mean_loss(W, cfg, stream, T):
    losses = []
    with torch.no_grad():
        for w in range((len(stream) - 1) // T):
            window = torch.tensor(stream[w * T: w * T + T + 1], dtype=torch.long)
            losses.append(forward_loss(W, cfg, window[None, :-1], window[None, 1:]).item())
    return sum(losses) / len(losses)


class Rope(torch.nn.Module):
    def __init__(self, D, T):
        super().__init__()
        cos, sin = rope_tables(T, D)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x):  # (B, T, rows, D)
        T, h = x.shape[1], x.shape[-1] // 2
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x1, x2 = x[..., :h].float(), x[..., h:].float()
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(torch.nn.Module):
    def __init__(self, cfg, rope):
        super().__init__()
        L = lambda i, o: torch.nn.Linear(i, o, bias=False)
        C, H, D = cfg["n_embd"], cfg["n_head"], cfg["head_dim"]
        self.att, self.H, self.D, self.rope = cfg["attention"], H, D, rope
        self.rq, self.rk = cfg.get("q_rank", 6), cfg.get("k_rank") or cfg.get("rank", 2)
        self.rv = cfg.get("v_rank") or cfg.get("rank", 2)
        self.hkv = {"mha": H, "gqa": cfg.get("n_kv_head") or H, "mqa": 1}.get(self.att, H)
        if self.att == "tpa":
            self.W_A_q, self.W_B_q = L(C, H * self.rq), L(C, self.rq * D)
        else:
            self.c_q = L(C, H * D)
        if self.att in ("tpa", "tpa_kvonly"):
            self.W_A_k, self.W_B_k = L(C, H * self.rk), L(C, self.rk * D)
            self.W_A_v, self.W_B_v = L(C, H * self.rv), L(C, self.rv * D)
        else:
            self.c_k, self.c_v = L(C, self.hkv * D), L(C, self.hkv * D)
        self.c_proj = L(H * D, C)

    def factored(self, x, WA, WB, R, rotate):
        B, T, _ = x.shape
        A = WA(x).view(B * T, self.H, R)
        Bf = WB(x).view(B, T, R, self.D)
        if rotate:
            Bf = self.rope(Bf)
        return torch.bmm(A, Bf.view(B * T, R, self.D)).div_(R).view(B, T, self.H, self.D)

    def forward(self, x):
        B, T, C = x.shape
        if self.att == "tpa":
            q = self.factored(x, self.W_A_q, self.W_B_q, self.rq, True)
        else:
            q = self.rope(self.c_q(x).view(B, T, self.H, self.D))
        if self.att in ("tpa", "tpa_kvonly"):
            k = self.factored(x, self.W_A_k, self.W_B_k, self.rk, True)
            v = self.factored(x, self.W_A_v, self.W_B_v, self.rv, False)
        else:
            k = self.rope(self.c_k(x).view(B, T, self.hkv, self.D))
            v = self.c_v(x).view(B, T, self.hkv, self.D)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=self.hkv != self.H)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, self.H * self.D))


class Block(torch.nn.Module):
    def __init__(self, cfg, rope):
        super().__init__()
        C, Fh = cfg["n_embd"], 8 * cfg["n_embd"] // 3
        self.attn = Attention(cfg, rope)
        self.c_fc1 = torch.nn.Linear(C, Fh, bias=False)
        self.c_fc2 = torch.nn.Linear(C, Fh, bias=False)
        self.c_proj = torch.nn.Linear(Fh, C, bias=False)

    def forward(self, x):
        x = x + self.attn(F.rms_norm(x, (x.shape[-1],)))
        h = F.rms_norm(x, (x.shape[-1],))
        return x + self.c_proj(F.silu(self.c_fc1(h)) * self.c_fc2(h))


class T6(torch.nn.Module):
    """The model as a module, for timing training (benchmark); same math as forward_loss."""

    def __init__(self, cfg):
        super().__init__()
        rope = Rope(cfg["head_dim"], cfg["block_size"])
        self.wte = torch.nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        self.h = torch.nn.ModuleList(Block(cfg, rope) for _ in range(cfg["n_layer"]))

    def forward(self, tokens, targets):
        x = self.wte(tokens)
        for block in self.h:
            x = block(x)
        logits = F.linear(F.rms_norm(x, (x.shape[-1],)), self.wte.weight)  # fp32 loss: autocast
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def benchmark(config_path, steps):
    import statistics
    import time

    import yaml

    full = yaml.safe_load(open(config_path))
    # The trainer's defaults (model/config.h, trainer/config.h) for keys the file leaves out.
    cfg = {"attention": "tpa", "n_layer": 12, "n_embd": 768, "n_head": 34, "head_dim": 64, "q_rank": 6, "rank": 2,
           "vocab_size": 50304, "block_size": 1024, **full.get("model", {})}
    train = {"batch_size": 8, "gradient_accumulation_steps": 1, **full.get("train", {})}
    opt = full.get("optim", {})
    B, T, accum = train["batch_size"], cfg["block_size"], train["gradient_accumulation_steps"]
    torch.manual_seed(0)
    model = T6(cfg).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.get("learning_rate", 6e-4),
                                  betas=(opt.get("beta1", 0.9), opt.get("beta2", 0.95)),
                                  weight_decay=opt.get("weight_decay", 0.1), fused=True)
    step_fn = torch.compile(model)
    g = torch.Generator(device="cuda").manual_seed(1234)
    times = []
    for step in range(steps + 3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(accum):
            tokens = torch.randint(0, cfg["vocab_size"], (B, T + 1), device="cuda", generator=g)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_fn(tokens[:, :-1], tokens[:, 1:]) / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.get("grad_clip", 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= 3:
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    print(f"pytorch_benchmark {B * T * accum / (ms / 1e3):.0f} {ms:.1f} "
          f"(torch {torch.__version__}, {torch.cuda.get_device_name()}, {B} x {accum} x {T}, median of {steps})")


def main():
    if sys.argv[1] == "benchmark":
        steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 10
        return benchmark(sys.argv[2], steps)
    export_dir, text_file, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = json.load(open(export_dir + "/config.json"))
    W = read_safetensors(export_dir + "/model.safetensors")
    stream = list(open(text_file, "rb").read()) + [0]
    print(f"pytorch_loss {mean_loss(W, cfg, stream, T):.8f}")
    if "--write-back" in sys.argv:
        out = sys.argv[sys.argv.index("--write-back") + 1]
        back = {name: t * 0.97 for name, t in W.items()}
        back["lm_head.weight"] = back["transformer.wte.weight"].clone()  # tied: both names, equal
        write_safetensors(out, back)
        print(f"pytorch_loss_back {mean_loss(back, cfg, stream, T):.8f}")


if __name__ == "__main__":
    main()
