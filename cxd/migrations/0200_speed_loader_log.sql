-- Speed layer: the loader's log. One row per notable loader event: an event moved to the
-- dead-letter stream (with the reason), a dead consumer's entries claimed, a load round
-- that failed. Dead-letter rows are unique per (dataset, stream_id) so a retried round
-- never logs one twice.
CREATE TABLE cxd.speed_log (
    id          bigserial PRIMARY KEY,
    dataset     text NOT NULL,
    event       text NOT NULL CHECK (event IN ('dead_letter', 'claimed', 'failed')),
    stream_id   text,
    reason      text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX speed_log_dataset_idx ON cxd.speed_log (dataset, id DESC);
CREATE UNIQUE INDEX speed_log_dead_letter_idx ON cxd.speed_log (dataset, stream_id)
    WHERE event = 'dead_letter';
