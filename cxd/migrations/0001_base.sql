-- Foundation: the three schemas and the metadata every layer shares.
CREATE SCHEMA IF NOT EXISTS cxd;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS raw;

-- Declared sources (cxd.yml or REST). Secrets are kept apart from the spec so that
-- nothing that prints a spec can print a secret.
CREATE TABLE cxd.sources (
    name        text PRIMARY KEY,
    type        text NOT NULL,
    spec        jsonb NOT NULL,
    secrets     jsonb NOT NULL DEFAULT '{}'::jsonb,
    origin      text NOT NULL DEFAULT 'api' CHECK (origin IN ('yaml', 'api', 'plugin')),
    paused      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One dataset per source: its kind and typed columns as the raw table has them.
CREATE TABLE cxd.datasets (
    name         text PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('time_series', 'point_in_time', 'instantaneous')),
    columns      jsonb NOT NULL,
    key          text[] NOT NULL DEFAULT '{}',
    time_column  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every fetch/ingest run, from queued to succeeded or failed.
CREATE TABLE cxd.runs (
    id                bigserial PRIMARY KEY,
    dataset           text NOT NULL,
    mode              text NOT NULL DEFAULT 'incremental',
    status            text NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'fetching', 'ingesting', 'succeeded', 'failed')),
    job_id            text,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    rows_fetched      bigint NOT NULL DEFAULT 0,
    rows_loaded       bigint NOT NULL DEFAULT 0,
    rows_quarantined  bigint NOT NULL DEFAULT 0,
    error             text,
    error_step        text,
    log               jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX runs_dataset_idx ON cxd.runs (dataset, id DESC);

-- Per dataset: the batch change sequence reached, the speed-layer watermark W (the
-- highest stream id loaded into raw) and the pull source's cursor. Written in the same
-- transaction as the raw rows they describe.
CREATE TABLE cxd.watermarks (
    dataset      text PRIMARY KEY,
    stream_id    text NOT NULL DEFAULT '0-0',
    cursor       jsonb,
    last_run_id  bigint,
    refreshed_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The monotonic change sequence behind every raw row's _seq (and changes-since cursors).
CREATE SEQUENCE cxd.change_seq;

-- Analysts' parameterised SQL.
CREATE TABLE cxd.saved_queries (
    name        text PRIMARY KEY,
    sql         text NOT NULL,
    params      jsonb NOT NULL DEFAULT '[]'::jsonb,
    outputs     jsonb NOT NULL DEFAULT '[]'::jsonb,
    refresh     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- API tokens, stored only as SHA-256 hashes.
CREATE TABLE cxd.tokens (
    id          bigserial PRIMARY KEY,
    token_hash  text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('read', 'ingest', 'analyst', 'admin')),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
