#!/usr/bin/env python3
# Prints, for every capture, what pg_waldump of the same major finds when run on that file alone:
# records starting in it, the first one, the end of the last one, and the error it stops at.
# These are the facts EXPECTED in src/wal/validator_tests.rs was checked against.
import os, re, subprocess, sys, glob, shutil
base=os.path.dirname(os.path.abspath(__file__))
for major in [13,14,15,16,17,18]:
    bindir=subprocess.check_output(['/work/shared/tools/pg-install',str(major)],text=True).strip()
    for f in sorted(glob.glob(f'{base}/{major}/*.zst')):
        name=os.path.basename(f)[:-4]
        if name.endswith('.history'): continue
        d=f'/tmp/waldump-check/{major}'; shutil.rmtree(d,ignore_errors=True); os.makedirs(d)
        seg=name[:24]
        subprocess.check_call(['zstd','-q','-d',f,'-o',f'{d}/{seg}'])
        p=subprocess.run([f'{bindir}/pg_waldump','-p',d,seg,seg],capture_output=True,text=True)
        recs=re.findall(r'len \(rec/tot\):\s*\d+/\s*(\d+), tx:.*?lsn: ([0-9A-F]+)/([0-9A-F]+)',p.stdout)
        last=recs[-1] if recs else None
        end=None
        if last:
            end=(int(last[1],16)<<32)+int(last[2],16)+int(last[0])
        first=recs[0] if recs else None
        print(major,name,'n=%d'%len(recs),'first=%s/%s'%(first[1],first[2]) if first else '', 'last_end=0/%X'%end if end else '', '|', p.stderr.strip().replace('\n',' ; ')[:300])
