-- msg_send commits a batch of sends in one call, and so in one round trip
-- and one implicit transaction: the committers called seven statements
-- between BEGIN and COMMIT for every batch, and at a few hundred small
-- batches a second the round trips and per-statement overhead, on both
-- sides, were most of what a send cost.
--
-- The arrays are parallel, one element per send, with each (sender,
-- client id) at most once: the caller resolves repeats within a batch from
-- the first's result. p_mentions holds bigint[] literals ('{3,5}');
-- p_payload JSON text or NULL. One row comes back per send:
--   duplicate  an earlier send had this client id and the same digest: its conv, seq, at
--   conflict   an earlier send had this client id and another digest (r_digest is its digest)
--   not_found  the sender is not a member of the conversation (or it does not exist)
--   bad_mention  r_bad is the first mentioned account that is not a member
--   sent       stored as r_conv/r_seq at r_at
-- Sequences are taken in array order within each conversation. A
-- concurrent send with the same client id that commits first makes the
-- whole call fail with unique_violation (23505): the caller retries the
-- sends one by one, and the retry sees it as an earlier send.
CREATE FUNCTION msg_send(p_sender bigint[], p_client text[], p_conv bigint[], p_kind text[], p_body text[],
                         p_mentions text[], p_payload text[], p_digest bytea[])
RETURNS TABLE (r_i integer, r_status text, r_conv bigint, r_seq bigint, r_at timestamptz, r_digest bytea, r_bad bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_done integer[] := '{}'; -- answered: not to be stored
BEGIN
    -- Earlier sends with these client ids.
    FOR r_i, r_status, r_conv, r_seq, r_at, r_digest IN
        SELECT s.i, CASE WHEN m.digest = p_digest[s.i] THEN 'duplicate' ELSE 'conflict' END,
               m.conversation_id, m.seq, m.created_at, m.digest
        FROM unnest(p_sender, p_client) WITH ORDINALITY AS s(sender, client, i)
        JOIN msg_messages m ON m.sender_id = s.sender AND m.client_id = s.client
    LOOP
        v_done := v_done || r_i;
        RETURN NEXT;
    END LOOP;
    r_conv := NULL; r_seq := NULL; r_at := NULL; r_digest := NULL;

    -- Lock the conversations in id order (batches cannot deadlock), then
    -- check membership under the lock: each statement of a function reads
    -- a fresh snapshot, so a removal that committed while we waited is seen.
    PERFORM 1 FROM msg_conversations
    WHERE id IN (SELECT c FROM unnest(p_conv) WITH ORDINALITY AS s(c, i) WHERE i <> ALL (v_done))
    ORDER BY id FOR UPDATE;

    FOR r_i, r_status, r_bad IN
        SELECT i, CASE WHEN sender_in THEN 'bad_mention' ELSE 'not_found' END, CASE WHEN sender_in THEN bad END
        FROM (
            SELECT i,
                   EXISTS (SELECT 1 FROM msg_members m WHERE m.conversation_id = p_conv[i]
                           AND m.account_id = p_sender[i] AND m.left_seq IS NULL) AS sender_in,
                   (SELECT u.a FROM unnest(p_mentions[i]::bigint[]) WITH ORDINALITY AS u(a, k)
                    WHERE NOT EXISTS (SELECT 1 FROM msg_members m WHERE m.conversation_id = p_conv[i]
                                      AND m.account_id = u.a AND m.left_seq IS NULL)
                    ORDER BY u.k LIMIT 1) AS bad
            FROM unnest(p_sender) WITH ORDINALITY AS s(sender, i)
            WHERE i <> ALL (v_done)
        ) c
        WHERE NOT sender_in OR bad IS NOT NULL
    LOOP
        v_done := v_done || r_i;
        RETURN NEXT;
    END LOOP;
    r_bad := NULL;

    -- The rest are stored: each conversation gives as many sequences as it
    -- has sends, in array order; sending reads everything before.
    RETURN QUERY
    WITH ok AS (
        SELECT i, p_conv[i] AS conv FROM unnest(p_sender) WITH ORDINALITY AS s(sender, i) WHERE i <> ALL (v_done)
    ), taken AS (
        UPDATE msg_conversations c SET last_seq = c.last_seq + n.n, last_at = now(), changed_xid = pg_current_xact_id()
        FROM (SELECT conv, count(*) AS n FROM ok GROUP BY conv) n
        WHERE c.id = n.conv
        RETURNING c.id, c.last_seq - n.n AS base
    ), numbered AS (
        SELECT ok.i, ok.conv, taken.base + row_number() OVER (PARTITION BY ok.conv ORDER BY ok.i) AS seq
        FROM ok JOIN taken ON taken.id = ok.conv
    ), stored AS (
        INSERT INTO msg_messages (conversation_id, seq, sender_id, client_id, kind, body, mentions, payload, digest, created_at)
        SELECT n.conv, n.seq, p_sender[n.i], p_client[n.i], p_kind[n.i], p_body[n.i], p_mentions[n.i]::bigint[],
               p_payload[n.i]::jsonb, p_digest[n.i], now()
        FROM numbered n
    ), cursors AS (
        UPDATE msg_members m SET read_seq = GREATEST(m.read_seq, r.seq)
        FROM (SELECT conv, p_sender[i] AS account, max(seq) AS seq FROM numbered GROUP BY 1, 2) r
        WHERE m.conversation_id = r.conv AND m.account_id = r.account
    )
    SELECT n.i::integer, 'sent', n.conv, n.seq, now(), NULL::bytea, NULL::bigint FROM numbered n;
END
$$;
