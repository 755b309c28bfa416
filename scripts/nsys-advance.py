#!/usr/bin/env python3
"""Where a replayed decode step's GPU time goes, from nsys's cuda_gpu_trace CSV
(scripts/cuda-owed.sh dnsys: nsys_dec_P.csv[.xz]): the last 40 steps (a step
starts at its k_get_rows), per kernel the advance of the step's end (its end
after the latest end before it: the critical path under PDL, where launches
overlap their predecessors' tails), launches a step, and each launch's own
duration; GPU idle is the gaps between operations. A measurement aid for
docs and bench/RESULTS.md, not part of the product or its tests.
usage: scripts/nsys-advance.py TRACE.csv ..."""
import csv,sys,collections,re
def load(f):
    rows=[]
    with open(f) as fh:
        lines=[l for l in fh if not l.startswith(('Generating','Processing'))]
    r=csv.DictReader(lines)
    for x in r:
        rows.append((int(x['Start (ns)']),int(x['Duration (ns)']),x['Name']))
    rows.sort()
    return rows
def short(n):
    n=re.sub(r'\(.*','',n); n=re.sub(r'<.*','',n); n=n.replace('void ','')
    if 'memcpy' in n.lower() or 'memset' in n.lower(): return n.split()[0] if n else n
    return n.strip()
for f in sys.argv[1:]:
    rows=load(f)
    # steps start at k_get_rows
    starts=[i for i,(s,d,n) in enumerate(rows) if 'k_get_rows' in n]
    steps=[(starts[i],starts[i+1]) for i in range(len(starts)-1)]
    steps=steps[-40:]
    adv=collections.defaultdict(float); dur=collections.defaultdict(float); cnt=collections.defaultdict(int)
    tot=0; idle=0
    for a,b in steps:
        prev_end=rows[a-1][0]+rows[a-1][1] if a>0 else rows[a][0]
        # include copies before k_get_rows belonging to this step: treat from previous step's last end
        step_start=prev_end
        for i in range(a,b):
            s,d,n=rows[i]; e=s+d; k=short(n)
            gap=max(0,s-prev_end)
            adv[k]+=max(0,e-prev_end); dur[k]+=d; cnt[k]+=1
            idle+=gap
            prev_end=max(prev_end,e)
        tot+=prev_end-step_start
    ns=len(steps)
    print(f"== {f}: {ns} steps, step {tot/ns/1e3:.1f} us, GPU idle (gaps) {idle/ns/1e3:.1f} us")
    for k,v in sorted(adv.items(),key=lambda kv:-kv[1]):
        print(f"  {k[:60]:60s} launches {cnt[k]/ns:5.1f}  advance {v/ns/1e3:7.1f} us ({v/cnt[k]/1e3:5.2f}/launch)  own {dur[k]/cnt[k]/1e3:5.2f} us/launch")
