"""An independent PyTorch implementation of T6 (../shared/docs/T6_SPEC.md), used to check that
weights exported by t6-export load in PyTorch and give the loss t6-eval reports, and that weights
written from PyTorch load back into t6.

usage: t6_reference.py EXPORT_DIR TEXT_FILE BLOCK_SIZE [--write-back OUT.safetensors]
Prints the mean loss over every window of BLOCK_SIZE+1 byte tokens (stride BLOCK_SIZE) of
TEXT_FILE's bytes followed by end-of-text 0: the validation split that
`t6-prepare --tokenizer byte` makes of that file.
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


def rope(x):  # x: (B, T, rows, D); rotation by -theta, halves convention
    T, D = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    angle = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    cos, sin = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
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


def main():
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
