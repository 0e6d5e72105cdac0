-- pgbench script: one case row plus one event row per transaction — the write an intake
-- submission makes (its case and its outbox event), as the floor routing's end-to-end rate is
-- compared with. Run by bench/routing.sh with 32 clients.
\set t random(1, 2000000000)
BEGIN;
INSERT INTO bench_cases (id, create_time, body) VALUES (md5(random()::text || :t), :t, repeat('x', 900));
INSERT INTO bench_events (id, kind, subject, create_time, payload) VALUES (md5(random()::text || :t), 'minqing.intake.v1.CaseSubmitted', 'cases/x', :t, convert_to(repeat('y', 600), 'UTF8'));
END;
