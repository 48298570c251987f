-- Conversations, their members and their messages.
--
-- Every conversation has a gapless sequence: sending a message locks the
-- conversation row, adds one to last_seq and inserts the message in the
-- same transaction, so sequences commit in order and none is skipped.
-- changed_xid is the transaction that last changed a row; a client's sync
-- cursor is a snapshot's xmin, so "changed since the cursor" misses nothing
-- that was still in flight when the cursor was taken.

CREATE TABLE msg_conversations (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('direct', 'group')),
    title       text NOT NULL DEFAULT '' CHECK (char_length(title) <= 100),
    direct_a    bigint REFERENCES accounts ON DELETE CASCADE, -- direct: the smaller account id
    direct_b    bigint REFERENCES accounts ON DELETE CASCADE, -- direct: the larger
    created_by  bigint NOT NULL,
    last_seq    bigint NOT NULL DEFAULT 0,
    last_at     timestamptz,
    member_count integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CHECK ((kind = 'direct') = (direct_a IS NOT NULL AND direct_b IS NOT NULL AND direct_a < direct_b))
);
CREATE UNIQUE INDEX msg_conversations_direct ON msg_conversations (direct_a, direct_b) WHERE kind = 'direct';

CREATE TABLE msg_members (
    conversation_id bigint NOT NULL REFERENCES msg_conversations ON DELETE CASCADE,
    account_id  bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    joined_seq  bigint NOT NULL DEFAULT 0,  -- messages after this one are visible
    left_seq    bigint,                     -- NULL while a member; messages up to it stay readable
    read_seq    bigint NOT NULL DEFAULT 0,  -- read cursor
    joined_at   timestamptz NOT NULL DEFAULT now(),
    changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (conversation_id, account_id)
);
CREATE INDEX msg_members_account ON msg_members (account_id, conversation_id);

CREATE TABLE msg_messages (
    conversation_id bigint NOT NULL REFERENCES msg_conversations ON DELETE CASCADE,
    seq        bigint NOT NULL,
    sender_id  bigint NOT NULL,
    client_id  text NOT NULL,
    kind       text NOT NULL,
    body       text NOT NULL DEFAULT '',
    mentions   bigint[] NOT NULL DEFAULT '{}',
    payload    jsonb,
    digest     bytea NOT NULL, -- of the content, to tell a retry from a reuse of client_id
    created_at timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX msg_messages_client ON msg_messages (sender_id, client_id);
