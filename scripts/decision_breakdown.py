#!/usr/bin/env python3
"""Breaks a model's decisions down by expression and scene, for a synth data set.

Reads the per-photo answers of `photoseg eval --decisions` and each album's album.json, and prints the
share of positives accepted by kind of expression (plain, with a position, a size or both), by the
referent's size and by whether the photo also holds both a same-colour and a same-shape distractor; and
the share of negatives rejected by what they hold of the expression: the colour-shape pair itself (then
a position or size rules it out), the colour and the shape on different objects, only the colour, only
the shape, or neither. Python's standard library only.

    photoseg eval --model MODEL --data DATA --split val --decisions val.csv
    python3 scripts/decision_breakdown.py val.csv
"""
import csv, json, sys, os, collections
rows=[(r['photo'],r['expression'],r['holds'],r['accepted']) for r in csv.DictReader(open(sys.argv[1]))]
albums={}
stats=collections.defaultdict(lambda:[0,0])
for path,expr,pos,accepted in rows:
    adir=os.path.dirname(path); ph=os.path.basename(path)
    if adir not in albums: albums[adir]=json.load(open(adir+'/album.json'))
    a=albums[adir]
    e=[x for x in a['expressions'] if x['text']==expr][0]
    objs=a['scenes'][ph]['objects']
    acc=accepted=='true'
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
