CREATE EXTENSION IF NOT EXISTS ltree;

-- One sequence orders every change of the address book, so a phone can ask
-- for "what changed since version N" across units, people and positions.
CREATE SEQUENCE org_version;

-- Units of the six-level tree. The official code is an attribute, never the
-- key: codes are reissued yearly. path is the ltree of ids from the root to
-- the unit itself (1.12.345), so subtree and ancestor queries use the GiST
-- index and moving a subtree is one UPDATE.
CREATE TABLE org_units (
    id         bigserial PRIMARY KEY,
    parent_id  bigint REFERENCES org_units,
    level      smallint NOT NULL CHECK (level BETWEEN 1 AND 6),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    code       text UNIQUE CHECK (code ~ '^[0-9]{12}([0-9]{3})?$'),
    sort_order int NOT NULL DEFAULT 0,
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'dissolved')),
    generated  boolean NOT NULL DEFAULT false,
    path       ltree NOT NULL,
    version    bigint NOT NULL DEFAULT nextval('org_version'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((parent_id IS NULL) = (level = 1))
);
CREATE INDEX org_units_path ON org_units USING gist (path);
CREATE INDEX org_units_parent ON org_units (parent_id, sort_order, id);
CREATE INDEX org_units_name ON org_units (name text_pattern_ops);
CREATE INDEX org_units_level ON org_units (level) WHERE status = 'active';

-- The address book's view of a person (an account): name with its pinyin for
-- search, and the mobile number. Accounts belong to the auth package; this is
-- the org package's projection of them.
CREATE TABLE org_people (
    account_id bigint PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    pinyin     text NOT NULL,  -- full pinyin without tones or spaces: zhangsan
    initials   text NOT NULL,  -- first letters: zs
    mobile     text,           -- 11 digits
    version    bigint NOT NULL DEFAULT nextval('org_version')
);
CREATE INDEX org_people_name ON org_people (name text_pattern_ops);
CREATE INDEX org_people_pinyin ON org_people (pinyin text_pattern_ops);
CREATE INDEX org_people_initials ON org_people (initials text_pattern_ops);
CREATE INDEX org_people_mobile_rev ON org_people (reverse(mobile) text_pattern_ops);

-- A position is a person's place in a unit (兼职: several per person, one
-- primary). unit_path copies org_units.path because subtree filters on
-- members are hot (address book, search); moving a unit updates both.
-- Removed positions stay as tombstones (deleted) so phones syncing their
-- cached address book learn of the removal.
CREATE TABLE org_positions (
    id         bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    unit_id    bigint NOT NULL REFERENCES org_units,
    unit_path  ltree NOT NULL,
    title      text NOT NULL DEFAULT '' CHECK (length(title) <= 100),
    leader     boolean NOT NULL DEFAULT false,
    is_primary boolean NOT NULL DEFAULT false,
    sort_order int NOT NULL DEFAULT 0,
    deleted    boolean NOT NULL DEFAULT false,
    version    bigint NOT NULL DEFAULT nextval('org_version'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX org_positions_live ON org_positions (account_id, unit_id) WHERE NOT deleted;
CREATE UNIQUE INDEX org_positions_primary ON org_positions (account_id) WHERE is_primary AND NOT deleted;
CREATE INDEX org_positions_unit ON org_positions (unit_id, sort_order, id) WHERE NOT deleted;
CREATE INDEX org_positions_path ON org_positions USING gist (unit_path) WHERE NOT deleted;
CREATE INDEX org_positions_account ON org_positions (account_id) WHERE NOT deleted;

-- Change log for incremental sync: one row per changed unit or position,
-- with the paths before and after, so a viewer who lost sight of an entity
-- (it moved out of their reach) is told to drop it. Bulk imports do not log
-- each row; they raise org_sync.epoch and phones behind it resync in full.
CREATE TABLE org_changes (
    version   bigint PRIMARY KEY DEFAULT nextval('org_version'),
    entity    text NOT NULL CHECK (entity IN ('unit', 'position', 'person')),
    entity_id bigint NOT NULL,
    old_path  ltree,
    new_path  ltree
);
CREATE INDEX org_changes_new_path ON org_changes USING gist (new_path);

CREATE TABLE org_sync (
    id    boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch bigint NOT NULL  -- versions below this cannot be synced incrementally
);
INSERT INTO org_sync (epoch) VALUES (0);
