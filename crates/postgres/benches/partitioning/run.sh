#!/usr/bin/env bash
# Time-partitioned history tables against batched deletes, on PostgreSQL, at scale.
#
# Builds two copies of the history in a scratch database — `plain_*` (one table each, as
# Tollgate's schema has them) and `part_*` (partitioned by execution id range, one
# partition per day: ids are UUIDv7, so a day of starts is one id range and a lookup by id
# prunes to one partition) — with H ended executions spread over D days, two step
# records each. Then, on each copy:
#   1. the hot-path reads and writes under load (pgbench, C clients, T seconds each):
#      an execution by id, its step records, the newest ended executions of a workflow,
#      and a start (one execution and two step records);
#   2. removing the oldest day: batched deletes of B (Tollgate's retention, one
#      transaction per batch) on `plain_*`; DETACH + DROP of the day's partitions on
#      `part_*` — its wall time and the WAL it wrote;
#   3. the start workload's latency while that removal runs.
# Figures go to docs/benchmarks.md; the decision they support is docs/adr/0005.
#
# Usage: crates/postgres/benches/partitioning/run.sh [postgres://admin-url]
#   env: H (default 10000000), D (30), B (500), C (8), T (30)
set -euo pipefail

ADMIN_URL=${1:-postgres://postgres@127.0.0.1:5432/postgres}
H=${H:-10000000}
D=${D:-30}
B=${B:-500}
C=${C:-8}
T=${T:-30}
PG_BIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
DB=tollgate_partition_bench
URL=${ADMIN_URL%/*}/$DB
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" "$@"; }
psql_db() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$URL" "$@"; }
now_ms() { date +%s%3N; }

psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $("$PG_BIN/postgres" --version)"
echo "history: H=$H ended executions over D=$D days, 2 step records each; batch B=$B; pgbench C=$C T=${T}s"

# The id of execution n (1..H): a UUIDv7 whose time is its start, D days ending two days
# ago spread evenly, and whose random part is derived from n, so any client can name it.
psql_db <<SQL
CREATE FUNCTION bench_start(n bigint) RETURNS timestamptz IMMUTABLE LANGUAGE sql AS
  \$\$ SELECT timestamptz '2026-01-01' + make_interval(secs => n * ($D * 86400.0 / $H)) \$\$;
CREATE FUNCTION bench_id(n bigint) RETURNS uuid IMMUTABLE LANGUAGE sql AS
  \$\$ SELECT (lpad(to_hex((extract(epoch FROM bench_start(n)) * 1000)::bigint), 12, '0')
             || '7' || substr(md5(n::text), 1, 3) || '8' || substr(md5(n::text), 5, 15))::uuid \$\$;
CREATE SEQUENCE bench_starts;
CREATE FUNCTION bench_day_id(day int) RETURNS uuid IMMUTABLE LANGUAGE sql AS
  \$\$ SELECT (lpad(to_hex((extract(epoch FROM timestamptz '2026-01-01' + make_interval(days => day)) * 1000)::bigint), 12, '0')
             || '00000000000000000000')::uuid \$\$;
SQL

for kind in plain part; do
  # Tables first without keys: the rows go in, then keys and indexes are built in bulk.
  if [ "$kind" = plain ]; then
    psql_db <<SQL
CREATE TABLE plain_executions (id uuid NOT NULL, workflow_key text NOT NULL, status text NOT NULL,
  context jsonb NOT NULL, started_at timestamptz NOT NULL, completed_at timestamptz);
CREATE TABLE plain_step_records (id uuid NOT NULL, execution_id uuid NOT NULL, step_id text NOT NULL,
  visit int NOT NULL, output jsonb NOT NULL, started_at timestamptz NOT NULL);
SQL
  else
    psql_db <<SQL
CREATE TABLE part_executions (id uuid NOT NULL, workflow_key text NOT NULL, status text NOT NULL,
  context jsonb NOT NULL, started_at timestamptz NOT NULL, completed_at timestamptz) PARTITION BY RANGE (id);
CREATE TABLE part_step_records (id uuid NOT NULL, execution_id uuid NOT NULL, step_id text NOT NULL,
  visit int NOT NULL, output jsonb NOT NULL, started_at timestamptz NOT NULL) PARTITION BY RANGE (execution_id);
SQL
    # D days of history plus 40 days ahead for the starts the workload adds.
    for day in $(seq 0 $((D + 40))); do
      psql_db <<SQL
CREATE TABLE part_executions_d$day PARTITION OF part_executions FOR VALUES FROM (bench_day_id($day)) TO (bench_day_id($((day + 1))));
CREATE TABLE part_step_records_d$day PARTITION OF part_step_records FOR VALUES FROM (bench_day_id($day)) TO (bench_day_id($((day + 1))));
SQL
    done
  fi
  began=$(now_ms)
  chunk=1000000
  for ((lo = 1; lo <= H; lo += chunk)); do
    hi=$((lo + chunk - 1 < H ? lo + chunk - 1 : H))
    psql_db <<SQL
INSERT INTO ${kind}_executions
  SELECT bench_id(n), 'shop_' || (n % 20), CASE WHEN n % 10 = 0 THEN 'failed' ELSE 'completed' END,
         jsonb_build_object('order_id', n, 'total', 20000 + n % 5000, 'customer', 'customer-' || (n % 9973),
           'approvals', jsonb_build_object('approve', jsonb_build_object('status', 'approved', 'by', 'manager'))),
         bench_start(n), bench_start(n) + interval '3 minutes'
  FROM generate_series($lo, $hi) AS n;
INSERT INTO ${kind}_step_records
  SELECT bench_id(n * 2 + s), bench_id(n), CASE s WHEN 0 THEN 'check' ELSE 'approve' END, 1,
         jsonb_build_object('result', true, 'decided_by', 'manager'), bench_start(n)
  FROM generate_series($lo, $hi) AS n, generate_series(0, 1) AS s;
SQL
  done
  # The same keys and indexes on both (Tollgate's: step records by execution, ended
  # executions for retention, a workflow's executions newest first).
  steps_key=$([ "$kind" = plain ] && echo "id" || echo "execution_id, id")
  psql_db -c "ALTER TABLE ${kind}_executions ADD PRIMARY KEY (id)" \
    -c "ALTER TABLE ${kind}_step_records ADD PRIMARY KEY ($steps_key)" \
    -c "ALTER TABLE ${kind}_step_records ADD FOREIGN KEY (execution_id) REFERENCES ${kind}_executions(id) ON DELETE CASCADE" \
    -c "CREATE INDEX ${kind}_step_records_execution ON ${kind}_step_records (execution_id, id)" \
    -c "CREATE INDEX ${kind}_executions_ended ON ${kind}_executions (completed_at, id) WHERE completed_at IS NOT NULL" \
    -c "CREATE INDEX ${kind}_executions_workflow ON ${kind}_executions (workflow_key, id)" \
    -c "VACUUM ANALYZE ${kind}_executions" -c "VACUUM ANALYZE ${kind}_step_records"
  echo "$kind: filled in $(( ($(now_ms) - began) / 1000 )) s; size $(psql_db -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c WHERE c.relname LIKE '${kind}_%' AND c.relkind = 'r'")"
done

# The hot path, one statement per pgbench transaction.
cat > "$WORK/by_id.sql" <<'SQL'
\set n random(1, :h)
SELECT status, context FROM :kind_executions WHERE id = bench_id(:n);
SQL
cat > "$WORK/steps.sql" <<'SQL'
\set n random(1, :h)
SELECT step_id, output FROM :kind_step_records WHERE execution_id = bench_id(:n) ORDER BY id;
SQL
cat > "$WORK/list.sql" <<'SQL'
\set w random(0, 19)
SELECT id, status FROM :kind_executions WHERE workflow_key = 'shop_' || :w ORDER BY id DESC LIMIT 50;
SQL
cat > "$WORK/start.sql" <<'SQL'
SELECT :h + nextval('bench_starts') AS k \gset
BEGIN;
INSERT INTO :kind_executions VALUES (bench_id(:k), 'shop_1', 'running', '{"order_id": 1}', now(), NULL);
INSERT INTO :kind_step_records VALUES (bench_id(2 * :k), bench_id(:k), 'check', 1, '{}', now()),
                                      (bench_id(2 * :k + 1), bench_id(:k), 'approve', 1, '{}', now());
COMMIT;
SQL
# pgbench's variables are not substituted in table names; write one file per kind.
for f in by_id steps list start; do
  for kind in plain part; do
    sed "s/:kind_/${kind}_/g" "$WORK/$f.sql" > "$WORK/$f.$kind.sql"
  done
done

bench() { # kind script seconds -> "tps p50 p99" (ms)
  local kind=$1 script=$2 secs=$3 dir
  dir=$(mktemp -d -p "$WORK")
  (cd "$dir" && "$PG_BIN/pgbench" -n -M simple -c "$C" -j 2 -T "$secs" -D h="$H" -l \
      -f "$WORK/$script.$kind.sql" "$URL" > out.txt 2>&1) || { cat "$dir/out.txt"; exit 1; }
  local tps
  tps=$(awk '/^tps = / {printf "%.0f", $3}' "$dir/out.txt")
  # Log lines: client_id transaction_no time(us) script_no epoch epoch_us
  cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n > "$dir/lat"
  local n p50 p99
  n=$(wc -l < "$dir/lat")
  p50=$(sed -n "$(( n / 2 + 1 ))p" "$dir/lat")
  p99=$(sed -n "$(( n * 99 / 100 + 1 ))p" "$dir/lat")
  printf '%s %.2f %.2f' "$tps" "$(echo "$p50 / 1000" | bc -l)" "$(echo "$p99 / 1000" | bc -l)"
}

echo
echo "| statement | layout | tps | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
for script in by_id steps list start; do
  for kind in plain part; do
    read -r tps p50 p99 <<< "$(bench "$kind" "$script" "$T")"
    echo "| $script | $kind | $tps | $p50 | $p99 |"
  done
done

# Removing the oldest day, with the start workload running beside it.
cat > "$WORK/purge_plain.sql" <<SQL
CREATE PROCEDURE purge_plain(cutoff timestamptz, batch int) LANGUAGE plpgsql AS \$\$
DECLARE n int;
BEGIN
  LOOP
    DELETE FROM plain_executions WHERE id IN (
      SELECT id FROM plain_executions WHERE completed_at IS NOT NULL AND completed_at < cutoff
      ORDER BY completed_at, id LIMIT batch FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    COMMIT;
    EXIT WHEN n = 0;
  END LOOP;
END \$\$;
SQL
psql_db -f "$WORK/purge_plain.sql"
day_rows=$(psql_db -c "SELECT count(*) FROM plain_executions WHERE id < bench_day_id(1)")
echo
echo "removing the oldest day ($day_rows executions, $((day_rows * 2)) step records):"
echo "| layout | how | wall s | WAL MB | starts/s beside it | start p50 / p99 ms beside it |"
echo "|---|---|---|---|---|---|"
for kind in plain part; do
  lsn=$(psql_db -c "SELECT pg_current_wal_lsn()")
  dir=$(mktemp -d -p "$WORK")
  (cd "$dir" && exec "$PG_BIN/pgbench" -n -M simple -c "$C" -j 2 -T 3600 -D h="$H" -l \
      -f "$WORK/start.$kind.sql" "$URL" > out.txt 2>&1) &
  loader=$!
  sleep 3
  began=$(now_ms)
  if [ "$kind" = plain ]; then
    psql_db -c "CALL purge_plain(timestamptz '2026-01-02 00:03:00', $B)"
    how="batched DELETE of $B"
  else
    # The referencing partition goes first, or the executions' detach finds it. Dropping
    # a table with a foreign key locks the referenced table exclusively, which the
    # starts beside it hold too: each statement waits at most 200 ms for its locks and
    # is tried again (as a production job would have to), and the tries are counted.
    tries=0
    for stmt in "ALTER TABLE part_step_records DETACH PARTITION part_step_records_d0 CONCURRENTLY" \
        "DROP TABLE part_step_records_d0" \
        "ALTER TABLE part_executions DETACH PARTITION part_executions_d0 CONCURRENTLY" \
        "DROP TABLE part_executions_d0"; do
      # A concurrent detach that timed out in its second phase is left pending and is
      # finished with FINALIZE instead.
      try=$stmt
      until PGOPTIONS="-c lock_timeout=200ms" psql_db -c "$try" 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$try" = "$stmt" ]; then try=${stmt/CONCURRENTLY/FINALIZE}; else try=$stmt; fi
      done
    done
    how="DETACH CONCURRENTLY + DROP ($tries lock retries)"
  fi
  ended=$(now_ms)
  wal=$(psql_db -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn') / 1048576.0, 1)")
  sleep 1
  kill $loader 2>/dev/null || true
  wait $loader 2>/dev/null || true
  # The starts that completed while the removal ran (log: ... time_us script epoch epoch_us).
  cat "$dir"/pgbench_log.* | awk -v a="$began" -v b="$ended" \
    '{t = $5 * 1000 + int($6 / 1000); if (t >= a && t <= b) print $3}' | sort -n > "$dir/lat"
  n=$(wc -l < "$dir/lat")
  wall=$((ended - began))
  if [ "$n" -gt 0 ]; then
    p50=$(sed -n "$(( n / 2 + 1 ))p" "$dir/lat"); p99=$(sed -n "$(( n * 99 / 100 + 1 ))p" "$dir/lat")
    beside=$(printf '%.0f | %.2f / %.2f' "$(echo "$n * 1000 / $wall" | bc -l)" "$(echo "$p50 / 1000" | bc -l)" "$(echo "$p99 / 1000" | bc -l)")
  else
    beside="0 | -"
  fi
  echo "| $kind | $how | $(printf '%.1f' "$(echo "$wall / 1000" | bc -l)") | $wal | $beside |"
done

psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
