#!/usr/bin/env bash
# Postgres baseline for the job-queue benchmark (scripts/bench-jobs.sh):
# the same cells (enqueue, enqueue_batch, drain, cycle, cycle_batch; 16
# producers and/or
# 16 workers, 10 s each) against ONE throwaway Postgres using the classic
# `SELECT ... FOR UPDATE SKIP LOCKED` claim, driven by pgbench.
#
# Run as root on Debian 12:   scripts/bench-jobs-postgres.sh [DURATION_S] | tee pg.jsonl
#
# Installs `postgresql` with apt-get if pgbench/initdb are missing, creates a
# cluster in a temp dir (unix socket only, no TCP), fsync=on and
# synchronous_commit=on: every commit waits for its WAL flush, which is the
# fair comparison with Orrery (every write fsynced on every node). The
# cluster is stopped and deleted on exit.
#
# JSON lines on stdout: the conditions, then one line per cell. Latencies:
# `claim_avg_ms` is pgbench's average for the claim statement (-r);
# `job_p50_ms`/`job_p99_ms` are per worker iteration (claim transaction +
# complete transaction, from pgbench --log). In `cycle`/`cycle_batch` an
# iteration that found the queue empty sleeps 5 ms and counts in these too
# (compare `worker_iterations_per_s` with `completed_per_s`).
#
# The batch cells batch exactly as Orrery's do: `enqueue_batch` inserts 16
# jobs per transaction (one multi-row INSERT, as Orrery's bulk submit is
# one request); `cycle_batch` does that on the producer side, and a worker
# claims up to 16 jobs and completes all of them in one transaction (as
# Orrery's bulk complete is one request).
set -euo pipefail
DUR="${1:-10}"
CLIENTS=16

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v pgbench >/dev/null; then
  apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql postgresql-contrib >&2
fi
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PGB="$PGBIN/pgbench"; [ -x "$PGB" ] || PGB="$(command -v pgbench)"

D="$(mktemp -d /tmp/orrery-pg-bench.XXXXXX)"
chown postgres: "$D"; chmod 755 "$D"
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$D/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$D/data" -A trust -U postgres >/dev/null
cat >>"$D/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$D'
port = 5439
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 100
shared_buffers = 256MB
EOF
as_pg "$PGBIN/pg_ctl" -D "$D/data" -l "$D/pg.log" -w start >/dev/null
PSQL=(runuser -u postgres -- psql -h "$D" -p 5439 -d postgres -X -q -v ON_ERROR_STOP=1 -At)
"${PSQL[@]}" <<'SQL'
CREATE TABLE jobs (
  id            bigserial PRIMARY KEY,
  queue         text        NOT NULL,
  kind          text        NOT NULL,
  params        jsonb       NOT NULL DEFAULT '{}',
  priority      int         NOT NULL DEFAULT 0,
  state         text        NOT NULL DEFAULT 'queued',
  run_at        timestamptz NOT NULL DEFAULT now(),
  attempts      int         NOT NULL DEFAULT 0,
  lease_token   bigint,
  lease_expires timestamptz,
  result        jsonb,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- The claim index: queued jobs of a queue, highest priority first, then FIFO.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, id) WHERE state = 'queued';
SQL

cat >"$D/enqueue.sql" <<'SQL'
\set p random(0, 3)
INSERT INTO jobs (queue, kind, params, priority) VALUES ('bench', 'bench.noop', '{"n": :client_id}', :p);
SQL
# One job per claim: claim transaction, then complete transaction (by id + token).
cat >"$D/claim1.sql" <<'SQL'
\set tok random(1, 9000000000000000)
WITH c AS (
  UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = :tok,
         lease_expires = now() + interval '30 s', updated_at = now()
   WHERE id = (SELECT id FROM jobs
                WHERE queue = 'bench' AND state = 'queued' AND run_at <= now()
                ORDER BY priority DESC, id
                LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING id)
SELECT coalesce((SELECT id FROM c), 0) AS jid \gset
\if :jid = 0
\sleep 5 ms
\else
UPDATE jobs SET state = 'done', result = '{"ok": true}', lease_expires = NULL, updated_at = now()
 WHERE id = :jid AND lease_token = :tok AND state = 'running';
\endif
SQL
# Up to 16 jobs per claim, then one complete transaction per job.
cat >"$D/enqueue16.sql" <<'SQL'
INSERT INTO jobs (queue, kind, params, priority)
SELECT 'bench', 'bench.noop', jsonb_build_object('n', :client_id, 'i', g), (g % 4) FROM generate_series(1, 16) g;
SQL
cat >"$D/claim16bulk.sql" <<'SQL'
\set tok random(1, 9000000000000000)
WITH c AS (
  UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = :tok,
         lease_expires = now() + interval '30 s', updated_at = now()
   WHERE id IN (SELECT id FROM jobs
                 WHERE queue = 'bench' AND state = 'queued' AND run_at <= now()
                 ORDER BY priority DESC, id
                 LIMIT 16 FOR UPDATE SKIP LOCKED)
  RETURNING id)
SELECT count(*) AS n, coalesce(array_agg(id), '{}') AS ids FROM c \gset
\if :n = 0
\sleep 5 ms
\else
UPDATE jobs SET state = 'done', result = '{"ok": true}', lease_expires = NULL, updated_at = now()
 WHERE id = ANY(':ids'::bigint[]) AND lease_token = :tok AND state = 'running';
\endif
SQL
chown postgres: "$D"/*.sql

count() { "${PSQL[@]}" -c "SELECT count(*) FILTER (WHERE true), count(*) FILTER (WHERE state = 'done') FROM jobs"; }
# pgbench run: name script -> prints its stdout to $D/name.out, per-txn log to $D/name.log.*
bench() {
  local name=$1 script=$2
  as_pg "$PGB" -h "$D" -p 5439 -n -c "$CLIENTS" -j 2 -T "$DUR" -r --log --log-prefix="$D/$name" \
    -f "$script" postgres >"$D/$name.out" 2>"$D/$name.err" || { cat "$D/$name.err" >&2; exit 1; }
}
pct() { # percentile (0..1) of column 3 (latency us) of the logs given, in ms
  local q=$1; shift
  cat "$@" 2>/dev/null | awk '{print $3}' | sort -n | awk -v q="$q" '{a[NR]=$1} END {if (NR==0) {print "null"; exit} i=int(NR*q+0.5); if (i<1) i=1; if (i>NR) i=NR; printf "%.2f", a[i]/1000}'
}
claim_avg() { # average latency (ms) of the claim statement, from -r
  awk '/WITH c AS/ {print $1; exit}' "$D/$1.out"
}
load() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' ','; }

PGVER="$("${PSQL[@]}" -c 'SHOW server_version')"
FSYNC="$("${PSQL[@]}" -c 'SHOW fsync')"; SC="$("${PSQL[@]}" -c 'SHOW synchronous_commit')"
WSM="$("${PSQL[@]}" -c 'SHOW wal_sync_method')"
CPU="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
printf '{"conditions":{"cores":%s,"cpu":"%s","loadavg_start":[%s],"postgres":"%s","fsync":"%s","synchronous_commit":"%s","wal_sync_method":"%s","duration_s":%s,"clients":%s,"data_dir":"%s"}}\n' \
  "$(nproc)" "$CPU" "$(load)" "$PGVER" "$FSYNC" "$SC" "$WSM" "$DUR" "$CLIENTS" "$D"

# enqueue: 16 producers
L0=$(load); read -r T0 C0 < <(count | tr '|' ' ')
bench enqueue "$D/enqueue.sql"
read -r T1 C1 < <(count | tr '|' ' ')
printf '{"cell":"enqueue","producers":%s,"enqueued":%s,"enqueued_per_s":%.0f,"insert_p50_ms":%s,"insert_p99_ms":%s,"loadavg":[%s]}\n' \
  "$CLIENTS" $((T1-T0)) "$(echo "($T1-$T0)/$DUR" | bc -l)" "$(pct 0.5 "$D"/enqueue.*[0-9])" "$(pct 0.99 "$D"/enqueue.*[0-9])" "$L0"

L0=$(load); read -r T0 C0 < <(count | tr '|' ' ')
bench enqueue_batch "$D/enqueue16.sql"
read -r T1 C1 < <(count | tr '|' ' ')
printf '{"cell":"enqueue_batch","producers":%s,"enqueue_batch":16,"enqueued":%s,"enqueued_per_s":%.0f,"insert_p50_ms":%s,"insert_p99_ms":%s,"loadavg":[%s]}\n' \
  "$CLIENTS" $((T1-T0)) "$(echo "($T1-$T0)/$DUR" | bc -l)" "$(pct 0.5 "$D"/enqueue_batch.*[0-9])" "$(pct 0.99 "$D"/enqueue_batch.*[0-9])" "$L0"

# drain: top the backlog up so that 16 workers cannot empty it in $DUR s
"${PSQL[@]}" -c "INSERT INTO jobs (queue, kind, params, priority) SELECT 'bench', 'bench.noop', '{}', (g % 4) FROM generate_series(1, 300000) g" -c "VACUUM ANALYZE jobs"
L0=$(load); read -r T0 C0 < <(count | tr '|' ' ')
bench drain "$D/claim1.sql"
read -r T1 C1 < <(count | tr '|' ' ')
printf '{"cell":"drain","workers":%s,"completed":%s,"completed_per_s":%.0f,"claim_avg_ms":%s,"job_p50_ms":%s,"job_p99_ms":%s,"loadavg":[%s]}\n' \
  "$CLIENTS" $((C1-C0)) "$(echo "($C1-$C0)/$DUR" | bc -l)" "$(claim_avg drain)" "$(pct 0.5 "$D"/drain.*[0-9])" "$(pct 0.99 "$D"/drain.*[0-9])" "$L0"

# cycle / cycle_batch: start from an empty queue, 16 producers + 16 workers at once
for cell in cycle cycle_batch; do
  "${PSQL[@]}" -c "UPDATE jobs SET state = 'done' WHERE state = 'queued'" -c "VACUUM ANALYZE jobs"
  script="$D/claim1.sql"; enq="$D/enqueue.sql"
  if [ "$cell" = cycle_batch ]; then script="$D/claim16bulk.sql"; enq="$D/enqueue16.sql"; fi
  L0=$(load); read -r T0 C0 < <(count | tr '|' ' ')
  bench "${cell}_enq" "$enq" & P=$!
  bench "${cell}_work" "$script"
  wait "$P"
  read -r T1 C1 < <(count | tr '|' ' ')
  BACKLOG="$("${PSQL[@]}" -c "SELECT count(*) FROM jobs WHERE state = 'queued'")"
  printf '{"cell":"%s","producers":%s,"workers":%s,"enqueued":%s,"completed":%s,"enqueued_per_s":%.0f,"completed_per_s":%.0f,"backlog_end":%s,"claim_avg_ms":%s,"job_p50_ms":%s,"job_p99_ms":%s,"worker_iterations_per_s":%s,"loadavg":[%s]}\n' \
    "$cell" "$CLIENTS" "$CLIENTS" $((T1-T0)) $((C1-C0)) "$(echo "($T1-$T0)/$DUR" | bc -l)" "$(echo "($C1-$C0)/$DUR" | bc -l)" "$BACKLOG" \
    "$(claim_avg "${cell}_work")" "$(pct 0.5 "$D"/"${cell}"_work.*[0-9])" "$(pct 0.99 "$D"/"${cell}"_work.*[0-9])" \
    "$(awk '/^tps/ {print $3; exit}' "$D/${cell}_work.out")" "$L0"
done
echo '{"loadavg_end":['"$(load)"']}'
