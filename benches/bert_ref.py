"""PyTorch timing of BERT-base on a 20-token sentence, PHOTOSEG_BENCH_THREADS threads (default 2), fp32, eager: the reference figure
printed beside photoseg's by `cargo bench --bench model`. Not project code; needs torch + transformers."""
import json
import os
import statistics
import time

import torch
from transformers import BertConfig, BertModel

torch.set_num_threads(int(os.environ.get("PHOTOSEG_BENCH_THREADS", "2")))
torch.manual_seed(0)
model = BertModel(BertConfig(), add_pooling_layer=False).eval()
ids = torch.arange(1000, 1020).unsqueeze(0)
mask = torch.ones_like(ids)
times = []
with torch.inference_mode():
    for i in range(12):
        t = time.perf_counter()
        model(input_ids=ids, attention_mask=mask)
        if i >= 2:
            times.append(time.perf_counter() - t)
print(json.dumps({"bert_base_20_tokens_s": statistics.median(times)}))
