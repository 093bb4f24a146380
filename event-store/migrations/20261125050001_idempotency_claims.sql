-- An idempotency key is now claimed before its command runs, in a statement
-- of its own, so that a duplicate arriving meanwhile waits for the outcome
-- instead of running the command again against the state the first one
-- left (which answered a retried checkout with 409 basket-not-open).
--
-- A row without an outcome is a claim in progress, held by the request
-- `claim_id` until `claimed_until`. A claim that lapses (its request
-- crashed) may be taken over, so no key stays stuck. The outcome is written,
-- and the claim cleared, in the transaction that appends the events, and only
-- while the claim is still held, so nothing is appended twice.
ALTER TABLE idempotency_keys
    ALTER COLUMN outcome DROP NOT NULL,
    ADD COLUMN claim_id uuid,
    ADD COLUMN claimed_until timestamptz,
    ADD CONSTRAINT idempotency_keys_outcome_or_claim
        CHECK (outcome IS NOT NULL OR (claim_id IS NOT NULL AND claimed_until IS NOT NULL));
