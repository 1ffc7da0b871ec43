#!/usr/bin/env python3
"""Breaks the paper's decision down by expression and scene, for a synth data set.

Reads the per-photo dump of examples/decision_probe.rs and each album's album.json, and prints, at the
margin M, the share of positives accepted by kind of expression (plain, with a position, a size or
both), by the referent's size and by whether the photo also holds both a same-colour and a same-shape
distractor; and the share of negatives rejected by what they hold of the expression: the colour-shape
pair itself (then a position or size rules it out), the colour and the shape on different objects,
only the colour, only the shape, or neither. Python's standard library only.

    PROBE_DUMP=val.tsv cargo run --release --example decision_probe -- MODEL DATA val
    python3 scripts/decision_breakdown.py val.tsv M
"""
import json, sys, os, collections
rows=[l.rstrip('\n').split('\t') for l in open(sys.argv[1])]
m=float(sys.argv[2])
albums={}
stats=collections.defaultdict(lambda:[0,0])
for path,expr,pos,score in rows:
    adir=os.path.dirname(path); ph=os.path.basename(path)
    if adir not in albums: albums[adir]=json.load(open(adir+'/album.json'))
    a=albums[adir]
    e=[x for x in a['expressions'] if x['text']==expr][0]
    objs=a['scenes'][ph]['objects']
    acc=float(score)>m
    pos=pos=='true'
    extra=('pos' if e['position'] else '')+('size' if e['size'] else '')
    if pos:
        tgt=[o for o in objs if o['color']==e['color'] and o['shape']==e['shape']]
        both_distr=any(o['color']==e['color'] and o['shape']!=e['shape'] for o in objs) and any(o['shape']==e['shape'] and o['color']!=e['color'] for o in objs)
        sz=tgt[0]['size'] if tgt else '?'
        for k in ['all','expr:'+(extra or 'plain'),'tsize:'+sz,'binding-distr:'+str(both_distr)]:
            stats['P '+k][0]+=acc; stats['P '+k][1]+=1
    else:
        cs=any(o['color']==e['color'] and o['shape']==e['shape'] for o in objs)
        c=any(o['color']==e['color'] for o in objs); s=any(o['shape']==e['shape'] for o in objs)
        kind='pair-present(wrong %s)'%extra if cs else ('colour+shape apart' if c and s else ('colour only' if c else ('shape only' if s else 'neither')))
        for k in ['all',kind]:
            stats['N '+k][0]+=(not acc); stats['N '+k][1]+=1
for k in sorted(stats):
    a,n=stats[k]; print(f"{k:40s} {100*a/n:5.1f} % of {n}")
