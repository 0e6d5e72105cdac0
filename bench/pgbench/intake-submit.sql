-- One SubmitCase's database work: a case row and its CaseSubmitted event, in one transaction,
-- with row sizes like the load tool's (a ~700-byte submission document, a ~900-byte payload).
\set r random(1, 2000000000)
BEGIN;
INSERT INTO pgbench_intake.cases (id, recorded_by, request_id, request_hash, channel, category, urgency,
    district, street, community, grid, building, lat_e6, lng_e6, reporter_phone, state, disposition,
    handling_unit, due_time, cluster_id, supplement_count, withdraw_reason, create_time, update_time,
    version, submission)
VALUES (gen_random_uuid()::text, 'window_staff:bench', gen_random_uuid()::text, md5(:r::text), 1,
    'onsite-environment-02', 2, '620102', '620102001', '620102001001', '620102001001-g01',
    '620102001001-g01-b01', NULL, NULL, '13909310001', 1, 0, '', NULL, NULL, 0, '',
    1795424400000000, 1795424400000000, 1, repeat('x', 700));
INSERT INTO pgbench_intake.events (id, kind, subject, create_time, payload, actor, traceparent, tracestate)
VALUES (gen_random_uuid()::text, 'minqing.intake.v1.CaseSubmitted', 'cases/' || :r, 1795424400000000,
    convert_to(repeat('y', 900), 'UTF8'), 'window_staff:bench', '', '');
END;
