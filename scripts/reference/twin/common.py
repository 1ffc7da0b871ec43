"""Shared data access and models for the synthetic-world twin experiments."""
import json, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

D = os.environ.get('TWIN_DIR', 'twin-work') + '/data'
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]


def load(split):
    z = np.load(f'{D}/{split}.npz')
    return {k: z[k] for k in z.files}


def meta():
    return json.load(open(f'{D}/meta.json'))


def heldout_pairs():
    m = meta()
    return {(COLORS.index(h['color']), SHAPES.index(h['shape'])) for h in m['heldout']}


def attr_maps(objmap, objs):
    """objmap [B,H,W] uint8 (255 none), objs [B,12,4] -> colour [B,H,W] (0 bg, 1..7), shape (0 bg, 1..6), size (0 bg,1,2)."""
    B = objmap.shape[0]
    om = objmap.astype(np.int64)
    valid = om != 255
    idx = np.where(valid, om, 0)
    bi = np.arange(B)[:, None, None]
    objs = objs.astype(np.int64)
    col = np.where(valid, objs[bi, idx, 0] + 1, 0)
    shp = np.where(valid, objs[bi, idx, 1] + 1, 0)
    siz = np.where(valid, objs[bi, idx, 2] + 1, 0)
    return col, shp, siz


def to_input(img_u8, coords=None):
    if coords is None:
        coords = not os.environ.get('NOCOORD')
    x = torch.from_numpy(img_u8).float().permute(0, 3, 1, 2) / 255.0
    x = (x - 0.5) / 0.25
    if coords:
        B, _, H, W = x.shape
        ys = torch.linspace(-1, 1, H).view(1, 1, H, 1).expand(B, 1, H, W)
        xs = torch.linspace(-1, 1, W).view(1, 1, 1, W).expand(B, 1, H, W)
        x = torch.cat([x, xs, ys], 1)
    return x


def cbr(i, o, s=1):
    if os.environ.get('PSNORM'):   # photoseg's norms: stem convs with GELU and no norm, decoder GroupNorm
        if s == 2 and not os.environ.get('GNSTEM'):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.GELU())
        if os.environ.get('BNDEC'):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.GroupNorm(8 if o % 8 == 0 else 1, o), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class UNetCNN(nn.Module):
    """Small U-Net: encoder 1/2..1/16, decoder back to 1/2. Returns the 1/2-res feature map (width dec[-1])."""

    def __init__(self, cin=5, w=(32, 48, 64, 96), dec=(64, 48, 32)):
        super().__init__()
        self.e1 = nn.Sequential(cbr(cin, w[0], 2), cbr(w[0], w[0]))          # 64
        self.e2 = nn.Sequential(cbr(w[0], w[1], 2), cbr(w[1], w[1]))         # 32
        self.e3 = nn.Sequential(cbr(w[1], w[2], 2), cbr(w[2], w[2]))         # 16
        self.e4 = nn.Sequential(cbr(w[2], w[3], 2), cbr(w[3], w[3]))         # 8
        self.d3 = cbr(w[3] + w[2], dec[0])
        self.d2 = cbr(dec[0] + w[1], dec[1])
        self.d1 = cbr(dec[1] + w[0], dec[2])
        self.out_ch = dec[2]

    def forward(self, x):
        e1 = self.e1(x); e2 = self.e2(e1); e3 = self.e3(e2); e4 = self.e4(e3)
        up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode='nearest')
        d3 = self.d3(torch.cat([up(e4, e3), e3], 1))
        d2 = self.d2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.d1(torch.cat([up(d2, e1), e1], 1))
        return d1, e3


# ---------------- tiny Swin-like backbone (conv stem + window attention) -----------------
class WindowBlock(nn.Module):
    def __init__(self, dim, heads, win, shift):
        super().__init__()
        self.dim, self.heads, self.win, self.shift = dim, heads, win, shift
        self.n1 = nn.LayerNorm(dim); self.qkv = nn.Linear(dim, 3 * dim); self.proj = nn.Linear(dim, dim)
        self.n2 = nn.LayerNorm(dim); self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.rel = nn.Parameter(torch.zeros(heads, (2 * win - 1) ** 2))
        c = torch.stack(torch.meshgrid(torch.arange(win), torch.arange(win), indexing='ij')).flatten(1)
        r = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0) + win - 1
        self.register_buffer('ridx', r[..., 0] * (2 * win - 1) + r[..., 1], persistent=False)

    def forward(self, x):  # x [B,H,W,C]
        B, H, W, C = x.shape
        w = self.win
        h = self.n1(x)
        if self.shift:
            h = torch.roll(h, (-w // 2, -w // 2), (1, 2))
        h = h.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        qkv = self.qkv(h).view(h.shape[0], w * w, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-1, -2)) * (C // self.heads) ** -0.5 + self.rel[:, self.ridx][None]
        h = (att.softmax(-1) @ v).transpose(1, 2).reshape(-1, w * w, C)
        h = self.proj(h).view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        if self.shift:
            h = torch.roll(h, (w // 2, w // 2), (1, 2))
        x = x + h
        return x + self.mlp(self.n2(x))


class SwinUNet(nn.Module):
    """Conv stem to 1/4 then Swin stages at 1/4, 1/8, 1/16 (window 4, shifted), same U-Net decoder to 1/2."""

    def __init__(self, cin=5, dims=(32, 64, 96), heads=(2, 4, 6), depth=2, win=4, dec=(64, 48, 32)):
        super().__init__()
        if os.environ.get('NOCOORD'):
            cin = 3
        if os.environ.get('PSDIMS'):   # photoseg's widths and heads: 32-64-128, 1-2-4 heads
            dims, heads = (32, 64, 128), (1, 2, 4)
        s1 = 16 if os.environ.get('PSSTEM') else 24
        self.stem1 = cbr(cin, s1, 2)                       # 64
        self.stem2 = nn.Sequential(cbr(s1, dims[0], 2))    # 32
        if os.environ.get('PSSTEM'):   # photoseg's stem end: a 1 x 1 projection, then LayerNorm per position
            self.stem_proj = nn.Conv2d(dims[0], dims[0], 1)
            self.stem_norm = nn.LayerNorm(dims[0])
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for i, d in enumerate(dims):
            self.stages.append(nn.ModuleList([WindowBlock(d, heads[i], win, j % 2 == 1) for j in range(depth)]))
            if i + 1 < len(dims):
                self.merges.append(nn.Sequential(nn.LayerNorm(4 * d), nn.Linear(4 * d, dims[i + 1])))
        self.d3 = cbr(dims[2] + dims[1], dec[0])   # 16 -> 8? (see forward)
        self.d2 = cbr(dec[0] + dims[0], dec[1])
        self.d1 = cbr(dec[1] + s1, dec[2])
        self.out_ch = dec[1] if os.environ.get('QUARTER') else dec[2]
        if os.environ.get('PSDEC'):   # photoseg's neck and training-only decoder (needs QUARTER)
            self.v_proj = nn.Conv2d(dims[2], 64, 1)
            self.lat1 = nn.Conv2d(dims[1], 16, 1)
            self.lat0 = nn.Conv2d(dims[0], 16, 1)
            self.top = cbr(64, 32)
            self.l1 = nn.Conv2d(16, 32, 1)
            self.mid = cbr(32, 32)
            self.l0 = nn.Conv2d(16, 32, 1)
            self.fine = cbr(32, 32)
            self.out_ch = 32

    def forward(self, x):
        s1 = self.stem1(x)
        h = self.stem2(s1)
        if os.environ.get('PSSTEM'):
            h = self.stem_norm(self.stem_proj(h).permute(0, 2, 3, 1))
        else:
            h = h.permute(0, 2, 3, 1)
        feats = []
        for i, st in enumerate(self.stages):
            for b in st:
                h = b(h)
            feats.append(h.permute(0, 3, 1, 2))
            if i < len(self.merges):
                B, H, W, C = h.shape
                h = h.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
                h = self.merges[i](h)
        f32, f16, f8 = feats  # 1/4, 1/8, 1/16
        up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode='nearest')
        if os.environ.get('PSDEC'):
            lat1, lat0 = self.lat1(f16), self.lat0(f32)
            x = self.top(self.v_proj(f8))
            x = self.mid(up(x, lat1) + self.l1(lat1))
            return self.fine(up(x, lat0) + self.l0(lat0)), f16
        d3 = self.d3(torch.cat([up(f8, f16), f16], 1))
        d2 = self.d2(torch.cat([up(d3, f32), f32], 1))
        if os.environ.get('QUARTER'):
            return d2, f16
        d1 = self.d1(torch.cat([up(d2, s1), s1], 1))
        return d1, f16


def nparams(m):
    return sum(p.numel() for p in m.parameters())


class FactNet(nn.Module):
    """Factorised encoder: a full-res colour classifier on RGB (+coords), then a shape U-Net that sees only the
    colour *probabilities* (8 ch: background + 7 colours) with the 7 colour channels randomly permuted per photo
    during training, so the shape pathway cannot tie a shape to a colour identity (no image is altered).
    forward -> (features at 1/2 res = [shape-net features, colour probs pooled to 1/2], colour logits at full res)."""

    def __init__(self, cin=5):
        super().__init__()
        self.col = nn.Sequential(cbr(cin, 16), cbr(16, 16), nn.Conv2d(16, 8, 1))
        self.shape = UNetCNN(cin=8 + 2)
        self.out_ch = self.shape.out_ch + 8
        self.permute = True

    def forward(self, x):
        cl = self.col(x)
        p = cl.softmax(1).detach()
        if self.training and self.permute:
            B = p.shape[0]
            perm = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(7)]) for _ in range(B)])
            p_in = torch.gather(p, 1, perm[:, :, None, None].expand(-1, -1, p.shape[2], p.shape[3]))
        else:
            p_in = p
        f, e3 = self.shape(torch.cat([p_in, x[:, 3:5]], 1))
        return torch.cat([f, F.avg_pool2d(p, 2)], 1), cl


def photoseg_init(model):
    """PSINIT: initialise as photoseg does: linear weights normal(0, 0.02) and zero biases (ops::linear),
    convolutions as candle-nn's default (Kaiming normal, std sqrt(2 / fan_in); bias uniform(+-1/sqrt(fan_in))),
    relative-position tables truncated normal(0, 0.02)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                nn.init.uniform_(m.bias, -fan_in ** -0.5, fan_in ** -0.5)
        elif isinstance(m, WindowBlock):
            nn.init.trunc_normal_(m.rel, std=0.02)
