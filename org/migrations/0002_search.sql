-- People search from the visible side. A search used to walk every person in
-- the country whose name matched and then test each one's positions against
-- the viewer's reach: for a county's staff, 19,000 rows read to keep 7. Now
-- every position carries the areas it lies in (its province, city and county,
-- from unit_path, so moving a unit moves them) and a copy of its person's
-- search keys, and the indexes below are keyed by area first: a search is a
-- range scan over the one county or province that covers the viewer's reach,
-- in pinyin order, stopping at the page limit (see SearchPeople).
--
-- The copies are kept in step by the writers of org_people and
-- org_positions (AddMember, MovePosition, the member importer); unit moves
-- need nothing, the area columns are generated from unit_path.
-- search_mobile_rev is the mobile number reversed, for suffix search.
-- COLLATE "C": LIKE 'prefix%' becomes an index range whatever the database
-- locale, and the pinyin order is the byte order the search cursor compares.
ALTER TABLE org_positions
    ADD COLUMN province_id bigint GENERATED ALWAYS AS (ltree2text(subpath(unit_path, 0, 1))::bigint) STORED,
    ADD COLUMN city_id bigint GENERATED ALWAYS AS (CASE WHEN nlevel(unit_path) >= 2 THEN ltree2text(subpath(unit_path, 1, 1))::bigint END) STORED,
    ADD COLUMN county_id bigint GENERATED ALWAYS AS (CASE WHEN nlevel(unit_path) >= 3 THEN ltree2text(subpath(unit_path, 2, 1))::bigint END) STORED,
    ADD COLUMN search_name text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN search_pinyin text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN search_initials text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN search_mobile_rev text COLLATE "C" NOT NULL DEFAULT '';

UPDATE org_positions pos SET search_name = p.name, search_pinyin = p.pinyin, search_initials = p.initials,
    search_mobile_rev = coalesce(reverse(p.mobile), '')
FROM org_people p WHERE p.account_id = pos.account_id;

-- The pinyin indexes are in the order a search returns its rows (a person's
-- primary position first), so a scan stops after a page.
-- Two area levels: a county (and everything below it: a county holds a few
-- hundred to a few thousand people) and a province. A viewer whose reach is
-- a city searches its province's index and filters; a city index per key
-- would cost four more indexes to build on every large import.
CREATE INDEX org_positions_county_pinyin ON org_positions (county_id, search_pinyin, account_id, is_primary DESC, id) WHERE NOT deleted;
CREATE INDEX org_positions_county_initials ON org_positions (county_id, search_initials) WHERE NOT deleted;
CREATE INDEX org_positions_county_name ON org_positions (county_id, search_name) WHERE NOT deleted;
CREATE INDEX org_positions_county_mobile ON org_positions (county_id, search_mobile_rev) WHERE NOT deleted;
CREATE INDEX org_positions_province_pinyin ON org_positions (province_id, search_pinyin, account_id, is_primary DESC, id) WHERE NOT deleted;
CREATE INDEX org_positions_province_initials ON org_positions (province_id, search_initials) WHERE NOT deleted;
CREATE INDEX org_positions_province_name ON org_positions (province_id, search_name) WHERE NOT deleted;
CREATE INDEX org_positions_province_mobile ON org_positions (province_id, search_mobile_rev) WHERE NOT deleted;

ANALYZE org_positions;

-- The same areas on the units, for subtree pages: the subtree of a
-- province, city or county is one btree range in id order that stops after
-- a page. The GiST index on path answers "<@" too, but on 665,000 units its
-- lossy signatures made some counties' first page take tens of
-- milliseconds.
ALTER TABLE org_units
    ADD COLUMN province_id bigint GENERATED ALWAYS AS (ltree2text(subpath(path, 0, 1))::bigint) STORED,
    ADD COLUMN city_id bigint GENERATED ALWAYS AS (CASE WHEN nlevel(path) >= 2 THEN ltree2text(subpath(path, 1, 1))::bigint END) STORED,
    ADD COLUMN county_id bigint GENERATED ALWAYS AS (CASE WHEN nlevel(path) >= 3 THEN ltree2text(subpath(path, 2, 1))::bigint END) STORED;
CREATE INDEX org_units_province ON org_units (province_id, id);
CREATE INDEX org_units_city ON org_units (city_id, id) WHERE city_id IS NOT NULL;
CREATE INDEX org_units_county ON org_units (county_id, id) WHERE county_id IS NOT NULL;

ANALYZE org_units;
