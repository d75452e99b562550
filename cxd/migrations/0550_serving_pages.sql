-- Serving: pages, named groups of saved queries sharing inputs, pushed together over /ws.
CREATE TABLE IF NOT EXISTS cxd.pages (
    name        text PRIMARY KEY,
    queries     jsonb NOT NULL DEFAULT '[]'::jsonb,
    inputs      jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
