"""PyTorch's causal scaled_dot_product_attention at one shape, timed the way t6-kernel-bench
times ours (CUDA events, median of --reps runs after a warm-up, FlashAttention's flop count),
so every change to our attention is judged against cuDNN on the same GPU in the same call.

usage: sdpa_bench.py [--B 24] [--T 1024] [--H 34] [--Hkv 34] [--D 64] [--reps 20]
Inputs are laid out (B, T, H, D) and passed as transposed views, as a model would pass them.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    for name, default in (("B", 24), ("T", 1024), ("H", 34), ("Hkv", 0), ("D", 64), ("reps", 20)):
        p.add_argument("--" + name, type=int, default=default)
    a = p.parse_args()
    hkv = a.Hkv or a.H
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(heads, scale):
        x = (torch.rand(a.B, a.T, heads, a.D, device="cuda", generator=g) * 2 - 1) * scale
        return x.to(torch.bfloat16).transpose(1, 2).requires_grad_()

    q, k, v = rand(a.H, 2.0), rand(hkv, 2.0), rand(hkv, 1.0)
    dout = torch.rand(a.B, a.H, a.T, a.D, device="cuda", generator=g, dtype=torch.bfloat16)
    fwd_flops = 4.0 * a.B * a.H * a.T * a.T * a.D / 2
    print(f"| kernels | forward ms | TFLOP/s | backward ms | TFLOP/s |\n|---|---|---|---|---|")
    for name, backend in (("PyTorch SDPA, cuDNN", SDPBackend.CUDNN_ATTENTION),
                          ("PyTorch SDPA, FlashAttention-2", SDPBackend.FLASH_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                def fwd():
                    with torch.no_grad():
                        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hkv != a.H)

                def fwd_bwd():
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=hkv != a.H)
                    torch.autograd.grad(out, (q, k, v), dout)

                f = median_ms(fwd, a.reps)
                fb = median_ms(fwd_bwd, a.reps)
        except RuntimeError as e:
            print(f"| {name} | not available: {str(e).splitlines()[0][:80]} | | | |")
            continue
        b = fb - f
        print(f"| {name} | {f:.3f} | {fwd_flops / f / 1e9:.0f} | {b:.3f} | {2.5 * fwd_flops / b / 1e9:.0f} |")
    print(f"(torch {torch.__version__}, {torch.cuda.get_device_name()}; backward = forward+backward − forward)")


if __name__ == "__main__":
    main()
