"""PyTorch twin of the built-in model's two training stages, for gradient parity (tests/it/grad_parity.rs).

Builds, in float64, the networks `photoseg train` trains for the built-in model, at reduced widths, under
photoseg's parameter names:
  - the features stage: conv stem with BatchNorm on batch statistics, timm's Swin, the dense trunk (a U-Net
    over stages 1-3 with BatchNorm), the 1 x 1 attribute classifier, and the weighted per-cell cross
    entropies (`train/attributes.rs::DenseDecoder::loss`);
  - the referent head stage: φ over a kept dense map and the cells' coordinates, Hugging Face's BERT, the
    per-token word projection summed into a query, and `train/loss.rs::referent` (per-cell BCE with object
    cells weighted 3, soft Dice on positives, 0.5 x BCE of each photo's 2 x 2-averaged peak).
For each it writes one batch, the weights (float32), every loss term, every parameter's gradient and the
weights after one AdamW step, to tests/fixtures/grad_twin_{features,referent}.safetensors.

torch, timm and transformers stay out of CI: the fixtures are committed. Run from the repository root:
    python -m venv venv && venv/bin/pip install torch timm transformers safetensors
    venv/bin/python scripts/reference/grad_twin.py

`grad_twin.py speed` instead trains the features stage at the built-in model's full shape (embed 32, depths
2-2-2-2, heads 1-2-4-8, window 4, conv stem 32, 128 px), in float32, 16 photos a step (random photos and
labels, made before the clock starts), AdamW, on PHOTOSEG_BENCH_THREADS threads (default 1), and prints
its photos per second as JSON: the exact twin that `cargo bench --bench train` times photoseg against.
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer

torch.set_default_dtype(torch.float64)
OUT = "tests/fixtures"
LR, WEIGHT_DECAY = 1e-3, 1e-4

# The model's shape (the Rust test builds the same: `grad_parity::config`).
EMBED, DEPTHS, HEADS, WINDOW, MLP, IMG, STEM = 8, (2, 2, 2), (1, 2, 4), 4, 2.0, 64, 8
TRUNK = (64, 48)  # model/dense.rs DenseTrunk::WIDTHS
CLASSES = (8, 7, 3)  # colour, shape, size, each with background
VOCAB, HIDDEN, LAYERS, BERT_HEADS, INTER, MAX_POS = 33, 16, 2, 2, 32, 32
DIM, PHI = 8, 64  # referent dim, φ's hidden width (model/referent.rs)


class Stem(nn.Module):
    """photoseg's convolutional stem: (3 x 3 stride-2 conv, BatchNorm, GELU) twice, 1 x 1 projection,
    LayerNorm per position; NHWC out, as timm's patch embedding."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ModuleList([nn.Conv2d(3, STEM // 2, 3, 2, 1), nn.Conv2d(STEM // 2, STEM, 3, 2, 1)])
        self.stem_bn = nn.ModuleList([nn.BatchNorm2d(STEM // 2), nn.BatchNorm2d(STEM)])
        self.proj = nn.Conv2d(STEM, EMBED, 1)
        self.norm = nn.LayerNorm(EMBED, eps=1e-5)

    def forward(self, x):
        for conv, bn in zip(self.stem, self.stem_bn):
            x = F.gelu(bn(conv(x)))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def swin():
    m = SwinTransformer(img_size=IMG, patch_size=4, in_chans=3, embed_dim=EMBED, depths=DEPTHS, num_heads=HEADS,
                        window_size=WINDOW, mlp_ratio=MLP, num_classes=0, drop_path_rate=0.0)
    m.patch_embed = Stem()
    return m


def stages(m, x):
    x = m.patch_embed(x)
    out = []
    for layer in m.layers:
        x = layer(x)
        out.append(x.permute(0, 3, 1, 2))
    return out


class NormConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        d = [EMBED, 2 * EMBED, 4 * EMBED]
        self.d3 = NormConv(d[2] + d[1], TRUNK[0])
        self.d2 = NormConv(TRUNK[0] + d[0], TRUNK[1])

    def forward(self, s):
        up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode="nearest")
        x = self.d3(torch.cat([up(s[2], s[1]), s[1]], 1))
        return self.d2(torch.cat([up(x, s[0]), s[0]], 1))


def weighted_ce(logits, labels):
    """Per-cell cross entropy, background (0) weighted 0.2, normalised by the summed weights."""
    w = torch.tensor([0.2] + [1.0] * (logits.shape[1] - 1))
    return F.cross_entropy(logits, labels, weight=w)


def randomize(model, seed):
    """Non-trivial values everywhere, so a wrong norm, bias or table shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name.lower() or "stem_bn" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif "embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            p.copy_(p.float().double())  # exactly what photoseg loads from the float32 file


def named_params(prefixed):
    """[(photoseg name, parameter)] of {prefix: module}."""
    out = []
    for prefix, module in prefixed.items():
        for n, p in module.named_parameters():
            out.append((prefix + n, p))
    return out


def weights_of(prefixed):
    out = {}
    for prefix, module in prefixed.items():
        for n, t in module.state_dict().items():
            if "relative_position_index" in n or "attn_mask" in n or "num_batches_tracked" in n:
                continue
            out[prefix + n] = t.detach().float().contiguous()
    return out


def finish(prefixed, params, losses, inputs, path):
    """Loss terms, gradients, one AdamW step; writes everything to `path`."""
    total = losses["total"]
    weights = weights_of(prefixed)  # before the step
    total.backward()
    out = dict(inputs)
    out.update({f"weight.{k}": v for k, v in weights.items()})
    for name, value in losses.items():
        out[f"loss.{name}"] = value.detach().reshape(1).contiguous()
    trained = [(n, p) for n, p in params if p.grad is not None]
    for n, p in trained:
        out[f"grad.{n}"] = p.grad.detach().float().contiguous()
    opt = torch.optim.AdamW([p for _, p in trained], lr=LR, weight_decay=WEIGHT_DECAY)
    opt.step()
    for n, p in trained:
        out[f"after.{n}"] = p.detach().float().contiguous()
    save_file(out, path)
    print(path, len(trained), "parameters with a gradient,", {k: float(v.detach()) for k, v in losses.items()})


def features_fixture():
    torch.manual_seed(0)
    sw, trunk, classifier = swin(), Trunk(), nn.Conv2d(TRUNK[1], sum(CLASSES), 1)
    prefixed = {"swin.": sw, "dense.": trunk, "aux.dense.classifier.": classifier}
    for i, (_, m) in enumerate(prefixed.items()):
        randomize(m, 10 + i)
    with torch.no_grad():  # running statistics: used only when indexing, but they are weights too
        for bn in [*sw.patch_embed.stem_bn, trunk.d3.norm, trunk.d2.norm]:
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
            bn.running_mean.copy_(bn.running_mean.float().double())
            bn.running_var.copy_(bn.running_var.float().double())
    for m in prefixed.values():
        m.train()
    g = torch.Generator().manual_seed(1)
    images = (torch.randn(4, 3, IMG, IMG, generator=g) * 1.5).float().double()
    grid = IMG // 4
    # Objects on a background: about a third of the cells are labelled.
    obj = torch.rand(4, grid, grid, generator=g) < 0.35
    labels = [torch.where(obj, torch.randint(1, c, (4, grid, grid), generator=g), 0) for c in CLASSES]
    logits = classifier(trunk(stages(sw, images)))
    c0, c1 = CLASSES[0], CLASSES[0] + CLASSES[1]
    colour = weighted_ce(logits[:, :c0], labels[0])
    shape = weighted_ce(logits[:, c0:c1], labels[1])
    size = weighted_ce(logits[:, c1:], labels[2])
    losses = {"colour": colour, "shape": shape, "size": size, "total": colour + shape + 0.5 * size}
    inputs = {"input.images": images.float().contiguous()}
    for name, l in zip(("colour", "shape", "size"), labels):
        inputs[f"input.{name}"] = l.to(torch.int64).contiguous()
    finish(prefixed, named_params(prefixed), losses, inputs, f"{OUT}/grad_twin_features.safetensors")


class Referent(nn.Module):
    def __init__(self):
        super().__init__()
        self.phi1 = nn.Conv2d(TRUNK[1] + 2, PHI, 1)
        self.phi2 = nn.Conv2d(PHI, DIM, 1)
        self.words = nn.Linear(HIDDEN, DIM + 1)
        self.bias = nn.Parameter(torch.zeros(1))

    def embed(self, dense):
        n, _, h, w = dense.shape
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.phi2(F.relu(self.phi1(torch.cat([dense, xs, ys], 1))))

    def query(self, hidden, mask):
        q = (self.words(hidden) * mask.unsqueeze(-1)).sum(1)
        return torch.cat([q[:, :DIM], q[:, DIM:] + self.bias], 1)


def referent_loss(logits, target, positive):
    y = target.to(logits.dtype)
    cells = (y * 3.0 * F.softplus(-logits) + (1 - y) * F.softplus(logits)).mean()
    p = torch.sigmoid(logits)
    per_photo = 1 - (2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1)
    dice = (per_photo * positive).sum() / positive.sum().clamp(min=1)
    score = F.avg_pool2d(logits.unsqueeze(1), 2).flatten(1).max(1).values
    decision = (positive * F.softplus(-score) + (1 - positive) * F.softplus(score)).mean()
    return {"cells": cells, "dice": dice, "decision": decision, "total": cells + dice + 0.5 * decision}


def referent_fixture():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=BERT_HEADS, intermediate_size=INTER, max_position_embeddings=MAX_POS,
                        type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    bert = BertModel(config, add_pooling_layer=True).double()
    head = Referent()
    prefixed = {"text.": bert, "referent.": head}
    randomize(bert, 20)
    randomize(head, 21)
    bert.train()  # dropout 0: train and eval are the same function
    g = torch.Generator().manual_seed(2)
    dense = torch.relu(torch.randn(3, TRUNK[1], 16, 16, generator=g)).float().double()
    lengths = [4, 2]
    ids = torch.zeros(2, 5, dtype=torch.int64)
    mask = torch.zeros(2, 5, dtype=torch.int64)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        mask[r, :n] = 1
    types = torch.zeros(2, 5, dtype=torch.int64)
    group_of = torch.tensor([0, 0, 1])
    target = torch.zeros(3, 16, 16, dtype=torch.int64)
    target[0, 3:8, 4:9] = 1
    target[2, 10:14, 1:4] = 1
    positive = torch.tensor([1.0, 0.0, 1.0])
    hidden = bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    q = head.query(hidden, mask.double())[group_of]
    e = head.embed(dense)
    logits = torch.einsum("nd,ndhw->nhw", q[:, :DIM], e) + q[:, DIM].view(-1, 1, 1)
    losses = referent_loss(logits, target, positive)
    inputs = {"input.dense": dense.float().contiguous(), "input.ids": ids, "input.mask": mask, "input.types": types,
              "input.group_of": group_of, "input.target": target, "input.positive": positive.float()}
    finish(prefixed, named_params(prefixed), losses, inputs, f"{OUT}/grad_twin_referent.safetensors")


def speed(steps=10, warmup=2, batch=16):
    """Photos per second of the features stage at the built-in shape (see the module's comment)."""
    global EMBED, DEPTHS, HEADS, WINDOW, MLP, IMG, STEM
    EMBED, DEPTHS, HEADS, WINDOW, MLP, IMG, STEM = 32, (2, 2, 2, 2), (1, 2, 4, 8), 4, 2.0, 128, 32
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(int(os.environ.get("PHOTOSEG_BENCH_THREADS", "1")))
    torch.manual_seed(0)
    sw, trunk, classifier = swin(), Trunk(), nn.Conv2d(TRUNK[1], sum(CLASSES), 1)
    modules = (sw, trunk, classifier)
    for m in modules:
        m.train()
    opt = torch.optim.AdamW([p for m in modules for p in m.parameters()], lr=2e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    grid = IMG // 4

    def make_batch():
        images = torch.randn(batch, 3, IMG, IMG, generator=g) * 1.5
        obj = torch.rand(batch, grid, grid, generator=g) < 0.35
        labels = [torch.where(obj, torch.randint(1, c, (batch, grid, grid), generator=g), 0) for c in CLASSES]
        return images, labels

    batches = [make_batch() for _ in range(warmup + steps)]
    c0, c1 = CLASSES[0], CLASSES[0] + CLASSES[1]
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        logits = classifier(trunk(stages(sw, images)))
        total = (weighted_ce(logits[:, :c0], labels[0]) + weighted_ce(logits[:, c0:c1], labels[1])
                 + 0.5 * weighted_ce(logits[:, c1:], labels[2]))
        opt.zero_grad()
        total.backward()
        opt.step()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for m in modules for p in m.parameters())
    print(json.dumps({"features_photos_per_s": batch * steps / seconds, "parameters": params, "steps": steps}))


if __name__ == "__main__":
    if sys.argv[1:] == ["speed"]:
        speed()
    else:
        features_fixture()
        referent_fixture()
