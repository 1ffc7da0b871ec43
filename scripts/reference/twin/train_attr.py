"""Experiment (a)/(c): per-pixel colour + shape (+ size) reading, from scratch, one thread.

usage: train_attr.py ARCH MINUTES TAG [--batch B] [--lr LR]
Evaluates per-object shape accuracy (majority vote over the object's pixels at 1/2 res) and per 1/16 cell
(probabilities pooled over each 16x16-px cell whose majority label is an object) on val and held-out photos,
with held-out photos split into objects of held-out colour-shape pairs and the rest.
"""
import argparse, json, os, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from common import *

torch.set_num_threads(1)
ap = argparse.ArgumentParser()
ap.add_argument('arch'); ap.add_argument('minutes', type=float); ap.add_argument('tag')
ap.add_argument('--batch', type=int, default=16); ap.add_argument('--lr', type=float, default=2e-3)
ap.add_argument('--eval-every', type=float, default=3.0, help='minutes')
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--photos', type=int, default=0, help='schedule by photos seen instead of minutes: the learning rate decays over this many photos and the run stops there (MINUTES is then ignored)')
args = ap.parse_args()
torch.manual_seed(args.seed); np.random.seed(args.seed)

tr, va, ho = load('train'), load('val'), load('heldout')
HP = heldout_pairs()
net = {'cnn': UNetCNN, 'swin': SwinUNet, 'fact': FactNet}[args.arch]()
head = nn.Conv2d(net.shape.out_ch if args.arch == 'fact' else net.out_ch, 8 + 7 + 3, 1)
model = nn.ModuleDict({'net': net, 'head': head})
if os.environ.get('PSINIT'):
    photoseg_init(model)
print(args.arch, 'params', nparams(model), flush=True)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
total_s = args.minutes * 60


def sub(a):  # 128 -> 64 label sampling at pixel (2i+1, 2j+1) centres ~ centre of the 2x2 block
    if os.environ.get('QUARTER'):
        return a[:, 2::4, 2::4]
    return a[:, 1::2, 1::2]


def forward(img, with_full_colour=False):
    f, cl = model['net'](to_input(img))
    if args.arch == 'fact':   # shape/size read from the shape features only, never from the colour probabilities
        f = f[:, :model['net'].shape.out_ch]
    out = model['head'](f)
    if args.arch == 'fact':   # colour comes from the full-res colour classifier (pooled to 1/2 for evaluation)
        out = torch.cat([F.avg_pool2d(cl, 2), out[:, 8:]], 1)
    return (out, cl) if with_full_colour else out


def augment(img, om):
    k = np.random.randint(4)
    img = np.rot90(img, k, (1, 2)); om = np.rot90(om, k, (1, 2))
    if np.random.rand() < 0.5:
        img = img[:, :, ::-1]; om = om[:, :, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(om)


@torch.no_grad()
def evaluate(d, name):
    model.eval()
    N = len(d['img'])
    res = {'obj': [0, 0], 'obj_ho': [0, 0], 'obj_seen': [0, 0], 'cell': [0, 0], 'cell_ho': [0, 0],
           'cell_seen': [0, 0], 'col_obj': [0, 0], 'size_obj': [0, 0]}
    for s in range(0, N, 64):
        img, om, ob = d['img'][s:s + 64], d['objmap'][s:s + 64], d['objs'][s:s + 64]
        out = forward(img)
        pc = out[:, 0:8].softmax(1)[:, 1:]           # colour probs (objects only)
        ps = out[:, 8:15].softmax(1)[:, 1:]          # shape probs
        pz = out[:, 15:18].softmax(1)[:, 1:]
        oms = torch.from_numpy(sub(om).astype(np.int64))
        # per 1/16 cell: majority label over the 16x16 full-res block
        omf = om.astype(np.int64)
        B = len(img)
        blocks = omf.reshape(B, 8, 16, 8, 16).transpose(0, 1, 3, 2, 4).reshape(B, 8, 8, 256)
        ps_cell = F.avg_pool2d(ps, 4 if os.environ.get('QUARTER') else 8)                 # 64 -> 8
        for b in range(B):
            for k in range(12):
                if ob[b, k, 3] == 0:
                    continue
                m = oms[b] == k
                if m.sum() == 0:
                    continue
                c, sh, sz = int(ob[b, k, 0]), int(ob[b, k, 1]), int(ob[b, k, 2])
                pred_s = int(ps[b][:, m].mean(1).argmax())
                ok = int(pred_s == sh)
                res['obj'][0] += ok; res['obj'][1] += 1
                key = 'obj_ho' if (c, sh) in HP else 'obj_seen'
                res[key][0] += ok; res[key][1] += 1
                res['col_obj'][0] += int(int(pc[b][:, m].mean(1).argmax()) == c); res['col_obj'][1] += 1
                res['size_obj'][0] += int(int(pz[b][:, m].mean(1).argmax()) == sz); res['size_obj'][1] += 1
            for gy in range(8):
                for gx in range(8):
                    vals, cnt = np.unique(blocks[b, gy, gx], return_counts=True)
                    # majority, ties to the smaller label (object beats background 255)
                    best = vals[np.lexsort((vals, -cnt))[0]]
                    if best == 255:
                        continue
                    c, sh = int(ob[b, best, 0]), int(ob[b, best, 1])
                    ok = int(int(ps_cell[b, :, gy, gx].argmax()) == sh)
                    res['cell'][0] += ok; res['cell'][1] += 1
                    key = 'cell_ho' if (c, sh) in HP else 'cell_seen'
                    res[key][0] += ok; res[key][1] += 1
    model.train()
    return {k: (round(100.0 * v[0] / v[1], 1) if v[1] else None, v[1]) for k, v in res.items()}


log = []
t0 = time.time(); seen = 0; step = 0; next_eval = args.eval_every * 60
N = len(tr['img'])
model.train()
wbg = torch.tensor([0.2] + [1.0] * 7)
while True:
    el = time.time() - t0
    done = seen / args.photos if args.photos else el / total_s
    if done >= 1:
        break
    lr = args.lr * min(1.0, (step + 1) / 100) * max(0.05, 1 - done)
    for g in opt.param_groups:
        g['lr'] = lr
    idx = np.random.randint(0, N, args.batch)
    img, om = augment(tr['img'][idx], tr['objmap'][idx])
    col, shp, siz = attr_maps(sub(om), tr['objs'][idx])
    out, cl = forward(img, True)
    col, shp, siz = [torch.from_numpy(a) for a in (col, shp, siz)]
    if args.arch == 'fact':
        colfull = torch.from_numpy(attr_maps(om, tr['objs'][idx])[0])
        lcol = F.cross_entropy(cl, colfull, weight=wbg[:8])
    else:
        lcol = F.cross_entropy(out[:, 0:8], col, weight=wbg[:8])
    loss = lcol + F.cross_entropy(out[:, 8:15], shp, weight=wbg[:7]) \
        + 0.5 * F.cross_entropy(out[:, 15:18], siz, weight=wbg[:3])
    opt.zero_grad(); loss.backward(); opt.step()
    seen += args.batch; step += 1
    if step % 50 == 0:
        print(f'step {step} seen {seen} min {el / 60:.1f} loss {loss.item():.3f} lr {lr:.2e}', flush=True)
    if time.time() - t0 >= next_eval or time.time() - t0 >= total_s:
        train_min = (time.time() - t0) / 60
        te = time.time()
        ev = {'val': evaluate(va, 'val'), 'heldout': evaluate(ho, 'heldout')}
        eval_s = time.time() - te
        t0 += eval_s  # evaluation time does not count as training time
        rec = {'step': step, 'seen': seen, 'train_min': round(train_min, 2), 'eval_s': round(eval_s, 1), **ev}
        log.append(rec)
        print(json.dumps(rec), flush=True)
        next_eval = (time.time() - t0) + args.eval_every * 60
train_min = (time.time() - t0) / 60
ev = {'val': evaluate(va, 'val'), 'heldout': evaluate(ho, 'heldout')}
rec = {'step': step, 'seen': seen, 'train_min': round(train_min, 2), 'final': True, **ev}
log.append(rec)
print(json.dumps(rec), flush=True)
json.dump(log, open(f'{os.environ.get("TWIN_DIR", "twin-work")}/{args.tag}.log.json', 'w'), indent=1)
torch.save(model.state_dict(), f'{os.environ.get("TWIN_DIR", "twin-work")}/{args.tag}.pt')
