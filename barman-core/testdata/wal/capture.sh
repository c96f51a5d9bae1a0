#!/bin/bash
# Regenerates the WAL captures of barman-core/testdata/wal/<major>/ from a real server.
# Usage (as root or as a user that may run PostgreSQL): capture.sh <major> <outdir>
# The server runs as the `postgres` OS user when invoked as root.
set -euo pipefail
major=$1 out=$2
bin=$(/work/shared/tools/pg-install "$major")
work=/tmp/walcap/$major
port=$((55400 + major))
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
rm -rf "$work"; mkdir -p "$work/archive"
[ "$(id -u)" = 0 ] && chown -R postgres "$work"
as_pg "$bin/initdb" -D "$work/data" -U postgres --wal-segsize=1 --no-sync >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $work/archive/%f'
wal_recycle = off
max_wal_size = 64MB
checkpoint_timeout = 1h
autovacuum = off
CONF
as_pg "$bin/pg_ctl" -s -D "$work/data" -l "$work/log" -w start
psql() { as_pg "$bin/psql" -X -q -At -h "$work" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
lsn() { psql -c "select pg_current_wal_insert_lsn()"; }
seg() { local hi=${1%/*} lo=${1#*/}; printf '%08X%08X%08X' 1 $((16#$hi)) $(((16#$lo) >> 20)); }

# 1. full-page images: a checkpoint, then updates touching every page.
psql -c "create table t(id int primary key, pad text)"
psql -c "insert into t select g, repeat('abcdefgh', 40) from generate_series(1, 2000) g"
psql -c "select pg_switch_wal()" >/dev/null
psql -c "checkpoint"
fpi_start=$(lsn)
psql -c "update t set pad = repeat('ABCDEFGH', 40) where id % 2 = 0"
fpi_seg=$(seg "$fpi_start")

# 2. one record larger than a segment: it starts in one segment and ends two later.
psql -c "select pg_switch_wal()" >/dev/null
psql -c "insert into t select g, 'before the big record' from generate_series(3001, 5000) g"
big_start=$(lsn)
psql -c "select pg_logical_emit_message(false, 'barman-rs', repeat('0123456789abcdef', 131072))" >/dev/null
big_end=$(lsn)
psql -c "insert into t values (-1, 'after the big record')"

# 3. a segment ended by XLOG_SWITCH: the rest of it is zeroes.
sw_seg=$(seg "$(lsn)")
psql -c "select pg_switch_wal()" >/dev/null

# 4. an unfinished segment as a crash leaves it: valid WAL, then zeroes (wal_init_zero = on).
psql -c "insert into t select g, 'partial' from generate_series(10001, 10100) g"
part_lsn=$(psql -c "select pg_current_wal_flush_lsn()")
part_seg=$(seg "$part_lsn")
as_pg "$bin/pg_ctl" -s -D "$work/data" -m immediate stop

# 5. archive recovery to the end of WAL: timeline 2 starts inside the segment of step 4.
as_pg touch "$work/data/recovery.signal"
echo "restore_command = 'cp $work/archive/%f %p'" | as_pg tee -a "$work/data/postgresql.conf" >/dev/null
as_pg "$bin/pg_ctl" -s -D "$work/data" -l "$work/log" -w start
until [ "$(psql -c 'select pg_is_in_recovery()')" = f ]; do sleep 0.2; done
psql -c "insert into t values (-2, 'on timeline 2')"
psql -c "select pg_switch_wal()" >/dev/null
sleep 2
as_pg "$bin/pg_ctl" -s -D "$work/data" -m fast stop

echo "fpi=$fpi_seg fpi_start=$fpi_start big_start=$big_start big_end=$big_end switch=$sw_seg partial=$part_seg partial_flush=$part_lsn"
mkdir -p "$out"
cd "$work/archive"
files="$fpi_seg $(seg "$big_start") $(seg "$big_end") $sw_seg ${part_seg}.partial 00000002.history 00000002${part_seg:8}"
for f in $(printf '%s\n' $files | sort -u); do
  zstd -q -19 -f "$f" -o "$out/$f.zst"
done
# every segment the big record touches
for n in $(seq $((16#$(seg "$big_start" | cut -c17-24))) $((16#$(seg "$big_end" | cut -c17-24)))); do
  f=$(printf '%08X%08X%08X' 1 0 $n); zstd -q -19 -f "$f" -o "$out/$f.zst"
done
ls -l "$out"
