#!/usr/bin/env python3
"""Regenerates the generated part of the seed corpora (fuzz/corpus/<target>/gen-*) from real data.

Real inputs come from barman-core/testdata/wal (WAL captured from PostgreSQL 13..18) and
/work/shared/reference/barman-samples (files written by Barman 3.x): the tar archives hold a
real backup_label, a real .backup file and real WAL bytes; the protocol frames are the ones
PostgreSQL sends for IDENTIFY_SYSTEM, BASE_BACKUP (both wire formats) and START_REPLICATION,
carrying those bytes. Run from anywhere: python3 fuzz/make-seeds.py
"""
import hashlib
import io
import os
import struct
import subprocess
import tarfile

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SAMPLES = "/work/shared/reference/barman-samples/catalog"
WAL = os.path.join(ROOT, "barman-core/testdata/wal")


def sample(name):
    p = os.path.join(SAMPLES, name)
    if os.path.exists(p):
        return open(p, "rb").read()
    return open(os.path.join(ROOT, "barman-core/testdata/catalog", name), "rb").read()


def wal(major, name, n):
    out = subprocess.run(["zstd", "-dc", os.path.join(WAL, str(major), name + ".zst")],
                         check=True, capture_output=True).stdout
    return out[:n]


def put(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "gen-" + name), "wb") as f:
        f.write(data)


# --- tar archives --------------------------------------------------------------------------
def member(tf, name, data=b"", kind=tarfile.REGTYPE, link="", mode=0o600):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = kind, mode, 1795609930, "postgres", "postgres"
    ti.uid = ti.gid = 999
    if kind == tarfile.SYMTYPE:
        ti.linkname = link
    if kind == tarfile.DIRTYPE:
        ti.mode = 0o700
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def pg_tar(fmt, long_name=False):
    """A base.tar as pg_basebackup's server sends it: small real files, dirs, a tablespace link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        member(tf, "backup_label", sample("base-20261125T123610-data-backup_label"))
        member(tf, "PG_VERSION", b"16\n")
        member(tf, "pg_stat", kind=tarfile.DIRTYPE)
        member(tf, "pg_wal", kind=tarfile.DIRTYPE)
        member(tf, "pg_tblspc/16385", kind=tarfile.SYMTYPE, link="/srv/ts")
        member(tf, "global/pg_control", wal(16, "000000010000000000000009", 600))
        member(tf, "base/5/1259", b"")
        if long_name:
            member(tf, "base/5/" + "x" * 120, b"long")
    return trim(buf.getvalue())


def trim(data):
    """Drops the record padding after the end-of-archive blocks (keeps the seeds small)."""
    while len(data) > 1536 and data[-1536:-1024] == bytes(512):
        data = data[:-512]
    return data


ustar = pg_tar(tarfile.USTAR_FORMAT)
put("tar_header", "pg-base-ustar.tar", ustar)
put("tar_header", "gnu-longname.tar", pg_tar(tarfile.GNU_FORMAT, True))
put("tar_header", "pax-longname.tar", pg_tar(tarfile.PAX_FORMAT, True))


def wal_archive_tar(files, algorithm="sha256"):
    """What barman-wal-archive sends: the WAL files, then SHA256SUMS (or MD5SUMS)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tf:
        lines = []
        for name, data in files:
            member(tf, name, data)
            lines.append("%s *%s\n" % (hashlib.new(algorithm, data).hexdigest(), name))
        member(tf, "SHA256SUMS" if algorithm == "sha256" else "MD5SUMS", "".join(lines).encode())
    return buf.getvalue()


seg = wal(16, "000000010000000000000009", 2048)
put("put_wal", "segment-sha256.tar", wal_archive_tar([("000000010000000000000009", seg)]))
put("put_wal", "segment-md5.tar", wal_archive_tar([("000000010000000000000009", seg)], "md5"))
put("put_wal", "history-backup.tar", wal_archive_tar([
    ("00000002.history", sample("00000002.history.uncompressed")),
    ("000000010000000000000006.00000028.backup", sample("000000010000000000000006.00000028.backup")),
    ("00000001000000000000000C.partial", wal(16, "00000001000000000000000C.partial", 600)),
]))

# --- backend protocol frames ---------------------------------------------------------------
def msg(kind, body=b""):
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def rowdesc(*names):
    b = struct.pack("!h", len(names))
    for n in names:
        b += cstr(n) + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0)
    return msg(b"T", b)


def datarow(*vals):
    b = struct.pack("!h", len(vals))
    for v in vals:
        b += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v.encode()
    return msg(b"D", b)


def select(rows, *names):
    out = rowdesc(*names)
    for r in rows:
        out += datarow(*r)
    return out + msg(b"C", cstr("SELECT"))


ready = msg(b"Z", b"I")
copyout = msg(b"H", b"\0" + struct.pack("!h", 0))
startup = (msg(b"R", struct.pack("!i", 10) + cstr("SCRAM-SHA-256-PLUS") + cstr("SCRAM-SHA-256") + b"\0")
           + msg(b"R", struct.pack("!i", 11) + b"r=abc,s=c2FsdA==,i=4096")
           + msg(b"R", struct.pack("!i", 12) + b"v=c2lnbmF0dXJl")
           + msg(b"R", struct.pack("!i", 0))
           + msg(b"S", cstr("server_version") + cstr("16.4"))
           + msg(b"S", cstr("integer_datetimes") + cstr("on"))
           + msg(b"K", struct.pack("!i", 4242) + b"\x01\x02\x03\x04")
           + ready)
put("backend_frame", "scram-startup", startup)
identify = select([("7441016235484004352", "1", "0/9000060", None)],
                  "systemid", "timeline", "xlogpos", "dbname") + msg(b"C", cstr("IDENTIFY_SYSTEM")) + ready
put("backend_frame", "identify-system", identify)
put("backend_frame", "notice-notify", msg(b"N", cstr("SNOTICE") + cstr("C00000") + cstr("Mhello") + b"\0")
    + msg(b"A", struct.pack("!i", 7) + cstr("chan") + cstr("payload")) + msg(b"I") + msg(b"W", b"\0\0\0")
    + msg(b"G", b"\0\0\0") + msg(b"c") + msg(b"n") + msg(b"1") + msg(b"2") + ready)

start = select([("0/9000028", "1")], "recptr", "tli")
tblspc = select([("16385", "/srv/ts", None), (None, None, None)], "spcoid", "spclocation", "size")
end = select([("0/9000100", "1")], "recptr", "tli") + msg(b"C", cstr("BASE_BACKUP")) + ready
legacy = start + tblspc
for part in (ustar, ustar, b'{"PostgreSQL-Backup-Manifest-Version": 1}'):
    legacy += copyout + msg(b"d", part) + msg(b"c")
put("basebackup_stream", "pg14-legacy", legacy + end)
typed = start + tblspc + copyout
typed += msg(b"d", b"n" + cstr("16385.tar") + cstr("/srv/ts")) + msg(b"d", b"d" + ustar)
typed += msg(b"d", b"p" + struct.pack("!q", len(ustar)))
typed += msg(b"d", b"n" + cstr("base.tar") + b"\0") + msg(b"d", b"d" + ustar[:1024]) + msg(b"d", b"d" + ustar[1024:])
typed += msg(b"d", b"m") + msg(b"d", b'd{"PostgreSQL-Backup-Manifest-Version": 1}') + msg(b"c")
put("basebackup_stream", "pg16-typed", typed + end)
put("backend_frame", "pg16-basebackup", typed + end)

# --- START_REPLICATION CopyData payloads (copy_both: each payload behind a length byte) -----
page = wal(16, "000000010000000000000009", 200)
xlog = b"w" + struct.pack("!qqq", 0, 0x9000000, 815000000000000) + page
keep = b"k" + struct.pack("!qqB", 0x9000000, 815000000000000, 1)
put("copy_both", "xlogdata-real-page", xlog)
chain = b""
for p in (keep, b"w" + struct.pack("!qqq", 0, 0x9000000, 1) + page[:100],
          b"w" + struct.pack("!qqq", 100, 0x9000000, 2) + page[100:200], keep):
    chain += bytes([len(p)]) + p
put("copy_both", "payload-chain", chain)
