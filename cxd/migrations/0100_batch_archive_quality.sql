-- Batch layer: the fetch archive index, quarantined rows, quality events, and what the
-- run records need beyond the foundation's columns.

-- Every fetch payload, compressed under CXD_HOME/archive, indexed by source and run.
CREATE TABLE cxd.archive (
    id          bigserial PRIMARY KEY,
    dataset     text NOT NULL,
    run_id      bigint,
    name        text,
    media_type  text,
    meta        jsonb NOT NULL DEFAULT '{}'::jsonb,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    path        text NOT NULL,
    fetched_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX archive_dataset_idx ON cxd.archive (dataset, id);
CREATE INDEX archive_run_idx ON cxd.archive (run_id);

-- Rows that failed a check or could not be typed, with the check and the reason.
CREATE TABLE cxd.quarantine (
    id          bigserial PRIMARY KEY,
    dataset     text NOT NULL,
    run_id      bigint,
    line        integer,
    row         jsonb,
    check_name  text NOT NULL,
    reason      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_dataset_idx ON cxd.quarantine (dataset, id);
CREATE INDEX quarantine_run_idx ON cxd.quarantine (run_id);

-- Every condition a check found, per run.
CREATE TABLE cxd.quality_events (
    id          bigserial PRIMARY KEY,
    dataset     text NOT NULL,
    run_id      bigint,
    check_name  text NOT NULL,
    severity    text NOT NULL CHECK (severity IN ('info', 'warning', 'error')),
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quality_events_dataset_idx ON cxd.quality_events (dataset, id);

-- Runs: durations per step, the schedule slot (one run per slot), reprocess/backfill
-- parameters, and how many attempts a run took.
ALTER TABLE cxd.runs
    ADD COLUMN duration_ms bigint,
    ADD COLUMN durations   jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN slot        text,
    ADD COLUMN params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN attempts    integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX runs_slot_idx ON cxd.runs (dataset, mode, slot) WHERE slot IS NOT NULL;
