"""PyTorch eager reference for bench/train_vs_torch.sh (bench only, never in CI).

Trains the same GPT-2 shape dstrain trains (byte vocabulary 256, tied embeddings, pre-LN
blocks, tanh GELU, causal attention, AdamW with weight decay, gradient clipping 1.0) in
fp32 on CPU, at W = 1 (plain eager) or W > 1 (DDP over gloo, one process per rank,
batch split evenly), and prints one JSON line: median step seconds over the steps after
the first and tokens per second of the whole world.

Usage: python torch_gpt2_cpu.py --data FILE --world W --threads T --batch B
       --seq_len T --n_layer L --n_head H --n_embd C --steps N
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q = q.view(b, t, self.h, c // self.h).transpose(1, 2)
        k = k.view(b, t, self.h, c // self.h).transpose(1, 2)
        v = v.view(b, t, self.h, c // self.h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, layers, heads, c):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(ctx, c)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        for m in self.modules():  # GPT-2 initialisation: N(0, 0.02) weights, zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied output head, as dstrain's
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def run(rank, a, out):
    torch.set_num_threads(a.threads)
    if a.world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group("gloo", rank=rank, world_size=a.world)
    torch.manual_seed(1234)
    data = torch.frombuffer(bytearray(open(a.data, "rb").read()), dtype=torch.uint8).long()
    model = GPT(256, a.seq_len, a.n_layer, a.n_head, a.n_embd)
    numel = sum(p.numel() for p in model.parameters())
    if a.world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    micro = a.batch // a.world
    g = torch.Generator().manual_seed(1000 + rank)
    times = []
    for _ in range(a.steps):
        starts = torch.randint(0, data.numel() - a.seq_len - 1, (micro,), generator=g)
        x = torch.stack([data[s:s + a.seq_len] for s in starts])
        y = torch.stack([data[s + 1:s + 1 + a.seq_len] for s in starts])
        t0 = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    if a.world > 1:
        dist.destroy_process_group()
    if rank == 0:
        step = statistics.median(times[1:])
        out.put({"numel": numel, "step_s": step, "tok_s": a.batch * a.seq_len / step,
                 "loss": float(loss.detach()), "threads": a.threads, "world": a.world,
                 "torch": torch.__version__})


def main():
    p = argparse.ArgumentParser()
    for k, d in (("world", 1), ("threads", 1), ("batch", 8), ("seq_len", 128), ("n_layer", 4),
                 ("n_head", 4), ("n_embd", 256), ("steps", 8)):
        p.add_argument("--" + k, type=int, default=d)
    p.add_argument("--data", required=True)
    a = p.parse_args()
    if a.batch % a.world or a.steps < 2:
        raise SystemExit("batch must divide by world and steps must be >= 2")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    if a.world == 1:
        run(0, a, out)
    else:
        os.environ["MASTER_PORT"] = str(29500 + os.getpid() % 1000)
        mp.spawn(run, args=(a, out), nprocs=a.world, join=True)
    print(json.dumps(out.get()))


if __name__ == "__main__":
    main()
