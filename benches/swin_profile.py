"""PyTorch's profiler on timm's Swin-B at 416 px (window 13), fp32, batch 1, eager: the per-op breakdown
printed beside photoseg's by `cargo bench --bench model`. Self CPU time of each aten op, summed into the
bench's categories, in seconds per image. Not project code; needs torch + timm.
Threads: PHOTOSEG_BENCH_THREADS (default 2), as the other references."""
import json
import os
import time

import timm
import torch
from torch.profiler import ProfilerActivity, profile

torch.set_num_threads(int(os.environ.get("PHOTOSEG_BENCH_THREADS", "2")))
torch.manual_seed(0)
model = timm.models.swin_transformer.SwinTransformer(
    img_size=416, window_size=13, num_classes=0, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)
).eval()
x = torch.randn(1, 3, 416, 416)

CATEGORIES = {
    "linear": ["aten::addmm", "aten::mm", "aten::linear", "aten::matmul"],
    "attention": ["aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::softmax",
                  "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
                  "aten::_scaled_dot_product_attention_math", "aten::_safe_softmax"],
    "copies": ["aten::copy_", "aten::clone", "aten::contiguous", "aten::roll", "aten::constant_pad_nd",
               "aten::pad", "aten::cat", "aten::index", "aten::empty_like", "aten::empty", "aten::permute",
               "aten::view", "aten::reshape", "aten::_unsafe_view", "aten::transpose", "aten::unbind",
               "aten::select", "aten::slice", "aten::as_strided", "aten::flatten", "aten::narrow",
               "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::split", "aten::chunk"],
    "layer_norm": ["aten::native_layer_norm", "aten::layer_norm"],
    "gelu": ["aten::gelu"],
    "residual": ["aten::add", "aten::add_"],
    "patch_embed": ["aten::convolution", "aten::_convolution", "aten::mkldnn_convolution", "aten::conv2d",
                    "aten::_nnpack_spatial_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"],
}
of = {op: cat for cat, ops in CATEGORIES.items() for op in ops}

runs = 3
with torch.inference_mode():
    for _ in range(2):
        model.forward_features(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(runs):
            model.forward_features(x)
        wall = (time.perf_counter() - t) / runs
out = {cat: 0.0 for cat in CATEGORIES}
out["other"] = 0.0
for ev in prof.key_averages():
    out[of.get(ev.key, "other")] += ev.self_cpu_time_total / 1e6 / runs
out["wall_profiled"] = wall
print(json.dumps(out))
