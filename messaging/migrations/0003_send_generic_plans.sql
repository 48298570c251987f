-- msg_send's statements take their arrays as parameters. With the default
-- plan_cache_mode, PL/pgSQL planned every statement again on every call
-- (a custom plan knows the arrays' lengths, so its estimate always looks
-- cheaper than the generic plan's), and for the small batches of a quiet
-- or a latency-bound node the planning was much of the call: pgbench
-- calling msg_send on a benchmark database (docs/benchmarks.md, session
-- 20), PostgreSQL's CPU per call for one send was 650-1,100 µs with
-- generic plans against 1,150-1,580 µs. The generic plans are the same
-- index lookups and nested loops whatever the batch holds.
ALTER FUNCTION msg_send(bigint[], text[], bigint[], text[], text[], text[], text[], bytea[])
    SET plan_cache_mode = force_generic_plan;
