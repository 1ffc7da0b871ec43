"""Reference GRSer in PyTorch (a plain reading of the paper), used only to measure
anchor speeds of a PyTorch implementation on the same hardware. Not project code."""
import os, time, sys, json, torch, torch.nn as nn, torch.nn.functional as F, timm
from transformers import BertConfig, BertModel

class GRSerRef(nn.Module):
    def __init__(self, swin="base", cv=512, img=416, bert_layers=12):
        super().__init__()
        cfg = dict(base=dict(embed_dim=128, depths=(2,2,18,2), num_heads=(4,8,16,32)),
                   tiny=dict(embed_dim=96, depths=(2,2,6,2), num_heads=(3,6,12,24)))[swin]
        self.swin = timm.models.swin_transformer.SwinTransformer(img_size=img, window_size=13, num_classes=0, **cfg)
        chs = [cfg["embed_dim"] * 2**i for i in range(4)]
        self.bert = BertModel(BertConfig(num_hidden_layers=bert_layers))
        self.vproj = nn.Conv2d(chs[3], cv, 1)
        self.lproj = nn.Linear(768, cv)
        self.n_max = 8
        self.zconv = nn.Sequential(nn.Conv2d(cv + self.n_max, cv, 3, padding=1), nn.GELU())
        self.zpool = nn.Linear(cv, cv)
        self.up3 = nn.Sequential(nn.Conv2d(cv + chs[2], 256, 3, padding=1), nn.GELU())
        self.up2 = nn.Sequential(nn.Conv2d(256 + chs[1], 128, 3, padding=1), nn.GELU())
        self.up1 = nn.Sequential(nn.Conv2d(128 + chs[0], 64, 3, padding=1), nn.GELU())
        self.head = nn.Conv2d(64, 2, 1)

    def feats(self, x):
        x = self.swin.patch_embed(x); outs = []
        for st in self.swin.layers:
            x = st(x); outs.append(x.permute(0, 3, 1, 2))
        return outs

    def text(self, ids, mask):
        h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.lproj((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))

    def forward(self, imgs, ids, mask, ids_anti, mask_anti):
        c1, c2, c3, c4 = self.feats(imgs)                  # N images of one group
        L, La = self.text(ids, mask)[0], self.text(ids_anti, mask_anti)[0]
        V = self.vproj(c4)                                   # N,Cv,H,W
        Vn = F.normalize(V, dim=1)
        Ml = torch.einsum("nchw,c->nhw", Vn, F.normalize(L, dim=0))
        p = (Ml[:, None] * V).mean((2, 3))                   # N,Cv prototypes
        Mv = torch.einsum("nchw,ic->nihw", Vn, F.normalize(p, dim=1))
        s_pos, s_neg = (p - L).norm(dim=1), (p - La).norm(dim=1)
        rank = s_pos.argsort().argsort() + (-s_neg).argsort().argsort()
        Mv = Mv[:, rank.argsort()]
        Mv = F.pad(Mv, (0, 0, 0, 0, 0, self.n_max - Mv.shape[1]))
        z = self.zconv(torch.cat([V, Mv], 1))
        zv = self.zpool(z.mean((2, 3)))
        d_pos, d_neg = (zv - L).norm(dim=1), (zv - La).norm(dim=1)
        y = F.interpolate(z, size=c3.shape[-2:], mode="bilinear")
        y = self.up3(torch.cat([y, c3], 1)); y = F.interpolate(y, size=c2.shape[-2:], mode="bilinear")
        y = self.up2(torch.cat([y, c2], 1)); y = F.interpolate(y, size=c1.shape[-2:], mode="bilinear")
        y = self.up1(torch.cat([y, c1], 1))
        return F.interpolate(self.head(y), size=imgs.shape[-2:], mode="bilinear"), d_pos, d_neg

def bench(dev, swin, img, groups, n, steps, dtype):
    m = GRSerRef(swin, img=img).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-5, weight_decay=0.01)
    imgs = torch.randn(groups, n, 3, img, img, device=dev)
    ids = torch.randint(1000, 30000, (1, 20), device=dev); mask = torch.ones_like(ids)
    y = torch.randint(0, 2, (groups, n, img, img), device=dev)
    pos = torch.tensor([1.0] * (n // 2) + [0.0] * (n - n // 2), device=dev)
    def step():
        opt.zero_grad(set_to_none=True)
        loss = 0
        with torch.autocast(device_type=dev, dtype=dtype, enabled=dtype != torch.float32):
            for g in range(groups):
                logits, dp, dn = m(imgs[g], ids, mask, ids, mask)
                ce = F.cross_entropy(logits.float(), y[g], reduction="none").mean((1, 2))
                loss = loss + (ce * pos).sum() / pos.sum() + torch.where(pos > 0, F.relu(dp - dn + 1), F.relu(dn - dp + 1)).mean()
        loss.backward(); opt.step()
    for _ in range(2): step()
    if dev == "cuda": torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps): step()
    if dev == "cuda": torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return groups * n * steps / dt

def bench_index(dev, swin, img, batch, iters, dtype):
    m = GRSerRef(swin, img=img).to(dev).eval()
    x = torch.randn(batch, 3, img, img, device=dev)
    with torch.inference_mode(), torch.autocast(device_type=dev, dtype=dtype, enabled=dtype != torch.float32):
        m.feats(x)
        if dev == "cuda": torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters): m.feats(x)
        if dev == "cuda": torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t)

if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    out = {}
    if dev == "cpu":
        torch.set_num_threads(int(os.environ.get("PHOTOSEG_BENCH_THREADS", "2")))
        out["index_swinT_416_fp32_b1_img_s"] = bench_index("cpu", "tiny", 416, 1, 5, torch.float32)
        out["index_swinB_416_fp32_b1_img_s"] = bench_index("cpu", "base", 416, 1, 3, torch.float32)
        out["train_swinT_128_fp32_1x4_img_s"] = bench("cpu", "tiny", 128, 1, 4, 2, torch.float32)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cudnn.allow_tf32 = True
        out["index_swinB_416_bf16_b64_img_s"] = bench_index("cuda", "base", 416, 64, 10, torch.bfloat16)
        out["index_swinB_416_fp32tf32_b64_img_s"] = bench_index("cuda", "base", 416, 64, 5, torch.float32)
        out["train_swinB_bert_416_bf16_4x8_img_s"] = bench("cuda", "base", 416, 4, 8, 5, torch.bfloat16)
        out["train_swinB_bert_416_fp32tf32_4x8_img_s"] = bench("cuda", "base", 416, 4, 8, 3, torch.float32)
        out["gpu"] = torch.cuda.get_device_name()
        out["torch"] = torch.__version__
    print(json.dumps(out, indent=1))
