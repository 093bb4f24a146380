-- The search indices a rebuild has created and not yet put behind their
-- aliases. A rebuild that fails or is killed leaves its rows, and the next
-- rebuild deletes those indices (unless an alias points at them: the swap
-- happened) before it starts.
CREATE TABLE search_rebuild_indices (
    index_name text        PRIMARY KEY,
    alias      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
