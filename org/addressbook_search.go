package org

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/zhangban/zhangban/internal/authz"
)

// maxSearchAreas bounds the index range scans one search runs; a viewer
// whose reach spreads over more areas than this is searched the wide way.
const maxSearchAreas = 8

// SearchPeople finds visible people by name prefix (张), full pinyin prefix
// (zhangs), pinyin initials (zs) or mobile-number suffix (four or more
// digits), ordered by pinyin. Each result carries the person's primary
// visible position.
//
// The search starts from the visible side: the positions carry their
// province and county ids and a copy of their person's search keys
// (migration 0002_search), and the indexes are keyed by area first. The
// viewer's reach and own units are covered by a few areas (a county for
// anyone whose units lie at county level or below, else a province); each
// area and search key is one index range scan in pinyin order that stops at
// the page limit, and the leaders of the units above the viewer's are one
// lookup by unit. The exact visibility filter then runs on those rows only.
// The superuser, and a reach spread over many areas, walk the people who
// match in order and keep the visible ones.
func (s *Service) SearchPeople(ctx context.Context, a authz.Actor, q, after string, limit int) ([]Member, string, error) {
	return s.searchPeople(ctx, a, q, after, limit, false)
}

// searchPeople is SearchPeople; wide forces the plan that walks every
// match, which tests compare the confined plan with.
func (s *Service) searchPeople(ctx context.Context, a authz.Actor, q, after string, limit int, wide bool) ([]Member, string, error) {
	q = strings.TrimSpace(q)
	if q == "" || len([]rune(q)) > 30 {
		return nil, "", invalid("q", "1-30 characters")
	}
	limit, err := pageSize(limit)
	if err != nil {
		return nil, "", err
	}
	var afterPinyin string
	var afterID int64
	if after != "" {
		raw, err := base64.RawURLEncoding.DecodeString(after)
		p, id, ok := strings.Cut(string(raw), "\x00")
		afterID, _ = strconv.ParseInt(id, 10, 64)
		if err != nil || !ok || afterID <= 0 {
			return nil, "", invalid("cursor", "not a cursor this server gave out")
		}
		afterPinyin = p
	}
	// The prefix to find, and the search keys (columns of org_positions)
	// it is looked for in; match is the same test on org_people.
	var prefix, match string
	var keys []string
	switch {
	case isDigits(q):
		if len(q) < 4 {
			return nil, "", invalid("q", "give at least 4 digits of a mobile number")
		}
		prefix, keys, match = reverse(q), []string{"search_mobile_rev"}, `reverse(p.mobile) LIKE $1`
	case isASCIILetters(q):
		prefix, keys, match = strings.ToLower(q), []string{"search_pinyin", "search_initials"}, `(p.pinyin LIKE $1 OR p.initials LIKE $1)`
	default:
		prefix, keys, match = q, []string{"search_name"}, `p.name LIKE $1`
	}
	sc, err := s.scope(ctx, a)
	if err != nil {
		return nil, "", err
	}
	var query string
	args := []any{likePrefix(prefix), afterPinyin, afterID, limit}
	areas, narrow := s.searchAreas(sc)
	upper, bounded := prefixUpper(prefix)
	if narrow && bounded && !wide {
		if len(areas) == 0 && len(sc.above) == 0 {
			return []Member{}, "", nil // sees nobody
		}
		filter, fargs := sc.memberFilter(7)
		// Where a pinyin scan starts: at the prefix, or at the cursor
		// when that is further on.
		pinyinFrom := max(prefix, afterPinyin)
		args = append(args, prefix, upper)
		args = append(args, fargs...)
		pinyinParam := ""
		if slices.Contains(keys, "search_pinyin") {
			args = append(args, pinyinFrom)
			pinyinParam = "$" + strconv.Itoa(len(args))
		}
		var branches []string
		branch := func(where, key string) {
			// The range on the key is what the index scans (LIKE with a
			// parameter cannot be turned into one in a generic plan); LIKE
			// keeps the match exact. The cursor is written out rather than
			// as a row comparison, which the planner would also hand to the
			// index scan and which could then start at the cursor's ('', 0)
			// instead of the prefix, reading a whole province.
			from := "$5"
			if key == "search_pinyin" {
				from = pinyinParam
			}
			branches = append(branches, `(SELECT DISTINCT ON (pos.search_pinyin, pos.account_id) pos.id, pos.account_id, pos.search_pinyin, pos.is_primary
				FROM org_positions pos
				WHERE `+where+` AND NOT pos.deleted AND pos.`+key+` >= `+from+` AND pos.`+key+` < $6 AND pos.`+key+` LIKE $1
					AND (pos.search_pinyin > $2 OR pos.search_pinyin = $2 AND pos.account_id > $3) AND `+filter+`
				ORDER BY pos.search_pinyin, pos.account_id, pos.is_primary DESC, pos.id LIMIT $4)`)
		}
		for _, ar := range areas {
			args = append(args, ar.id)
			where := "pos." + ar.column + " = $" + strconv.Itoa(len(args))
			for _, k := range keys {
				branch(where, k)
			}
		}
		if len(sc.above) > 0 {
			for _, k := range keys {
				branch("pos.unit_id = ANY($9) AND pos.leader", k)
			}
		}
		query = `SELECT ` + memberSelect + ` FROM (
			SELECT DISTINCT ON (h.search_pinyin, h.account_id) h.id, h.account_id, h.search_pinyin
			FROM (` + strings.Join(branches, "\nUNION ALL\n") + `) h
			ORDER BY h.search_pinyin, h.account_id, h.is_primary DESC, h.id LIMIT $4) hit
		JOIN org_positions pos ON pos.id = hit.id
		JOIN org_people p ON p.account_id = pos.account_id
		JOIN org_units u ON u.id = pos.unit_id
		ORDER BY hit.search_pinyin, hit.account_id`
	} else {
		filter, fargs := sc.memberFilter(5)
		args = append(args, fargs...)
		query = `SELECT ` + memberSelect + `
		FROM org_people p
		CROSS JOIN LATERAL (SELECT * FROM org_positions pos WHERE pos.account_id = p.account_id AND NOT pos.deleted AND ` + filter + `
			ORDER BY pos.is_primary DESC, pos.id LIMIT 1) pos
		JOIN org_units u ON u.id = pos.unit_id
		WHERE ` + match + ` AND (p.pinyin, p.account_id) > ($2, $3)
		ORDER BY p.pinyin, p.account_id LIMIT $4`
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, "", err
	}
	ms, err := s.collectMembers(a, rows)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(ms) == limit {
		last := ms[len(ms)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.Pinyin + "\x00" + strconv.FormatInt(last.AccountID, 10)))
	}
	return ms, next, nil
}

// searchArea confines a search to the positions whose column (county_id or
// province_id of org_positions) is id.
type searchArea struct {
	column string
	id     int64
}

// searchAreas returns the fewest areas that cover the viewer's reach and
// own units: the county of each unit at county level or below, else its
// province, without areas inside others. ok is false when a search should
// not be confined to areas: the superuser, a unit the in-memory tree does
// not know yet, or too many areas.
func (s *Service) searchAreas(sc *scope) (areas []searchArea, ok bool) {
	if sc.all {
		return nil, false
	}
	var counties, provinces []int64
	for _, list := range [][]int64{sc.roots, sc.own} {
		for _, u := range list {
			anc, err := s.tree.Ancestors(u) // the unit first, its province last
			if err != nil {
				return nil, false
			}
			if Level(len(anc)) >= County {
				counties = appendNew(counties, anc[len(anc)-int(County)])
			} else {
				provinces = appendNew(provinces, anc[len(anc)-1])
			}
		}
	}
	for _, p := range provinces {
		areas = append(areas, searchArea{"province_id", p})
	}
	for _, c := range counties {
		anc, err := s.tree.Ancestors(c)
		if err != nil {
			return nil, false
		}
		if !contains(provinces, anc[len(anc)-1]) {
			areas = append(areas, searchArea{"county_id", c})
		}
	}
	return areas, len(areas) <= maxSearchAreas
}

func appendNew(xs []int64, x int64) []int64 {
	if contains(xs, x) {
		return xs
	}
	return append(xs, x)
}

// prefixUpper returns the least string above every string that starts with
// prefix, in byte order (COLLATE "C"): the prefix with its last character
// incremented. UTF-8 keeps code-point order, so this is also the order of
// the characters. ok is false when there is none (U+10FFFF at the end).
func prefixUpper(prefix string) (string, bool) {
	r, size := utf8.DecodeLastRuneInString(prefix)
	if r == utf8.RuneError || r == utf8.MaxRune {
		return "", false
	}
	r++
	if r >= 0xD800 && r <= 0xDFFF { // surrogates are not characters
		r = 0xE000
	}
	return prefix[:len(prefix)-size] + string(r), true
}

// likePrefix escapes LIKE's wildcards in a user's query.
func likePrefix(q string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(q) + "%"
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func isASCIILetters(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}
