package mobileapi

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/org"
)

// actor is who a request acts for, as the domain packages need it.
func actor(r *http.Request, p auth.Principal) authz.Actor {
	return authz.Actor{AccountID: p.AccountID, Superuser: p.Superuser, ClientAddr: clientAddr(r), RequestID: requestID(r.Context())}
}

// queryInt reads an optional integer query parameter.
func queryInt(q url.Values, name string, def int64) (int64, *Error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, invalidField(name, "must be an integer")
	}
	return n, nil
}

func (a *API) orgRoutes() {
	m := a.mux
	m.HandleFunc("POST /v1/org/units", a.authed(a.idempotent(a.createUnit)))
	m.HandleFunc("GET /v1/org/units", a.authed(a.searchUnits))
	m.HandleFunc("GET /v1/org/units/{id}", a.authed(a.getUnit))
	m.HandleFunc("PATCH /v1/org/units/{id}", a.authed(a.updateUnit))
	m.HandleFunc("POST /v1/org/units/{id}/move", a.authed(a.moveUnit))
	m.HandleFunc("POST /v1/org/units/{id}/dissolve", a.authed(a.dissolveUnit))
	m.HandleFunc("GET /v1/org/units/{id}/children", a.authed(a.unitChildren))
	m.HandleFunc("GET /v1/org/units/{id}/ancestors", a.authed(a.unitAncestors))
	m.HandleFunc("GET /v1/org/units/{id}/subtree", a.authed(a.unitSubtree))
	m.HandleFunc("GET /v1/org/units/{id}/members", a.authed(a.unitMembers))
	m.HandleFunc("GET /v1/org/units/{id}/stats", a.authed(a.unitStats))
	m.HandleFunc("POST /v1/org/units/{id}/members", a.authed(a.idempotent(a.addMember)))
	m.HandleFunc("GET /v1/org/people", a.authed(a.searchPeople))
	m.HandleFunc("GET /v1/org/people/{id}", a.authed(a.personCard))
	m.HandleFunc("PATCH /v1/org/positions/{id}", a.authed(a.updatePosition))
	m.HandleFunc("POST /v1/org/positions/{id}/move", a.authed(a.movePosition))
	m.HandleFunc("DELETE /v1/org/positions/{id}", a.authed(a.removePosition))
	m.HandleFunc("GET /v1/org/changes", a.authed(a.orgChanges))
	m.HandleFunc("GET /v1/org/grants", a.authed(a.listGrants))
	m.HandleFunc("POST /v1/org/grants", a.authed(a.grantRole))
	m.HandleFunc("DELETE /v1/org/grants", a.authed(a.revokeRole))
	m.HandleFunc("GET /v1/audit", a.authed(a.auditLog))
}

// withID reads the {id} path parameter and runs fn with it.
func (a *API) withID(w http.ResponseWriter, r *http.Request, fn func(id int64) (any, int, error)) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	v, status, err := fn(id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

func (a *API) createUnit(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req org.NewUnit
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	u, err := a.org.CreateUnit(r.Context(), actor(r, p), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/org/units/"+strconv.FormatInt(u.ID, 10))
	writeJSON(w, http.StatusCreated, u)
}

// searchUnits finds units by name (?q=) or looks one up by its official
// code (?code=, any of the 2-12 digit forms).
func (a *API) searchUnits(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	if code := q.Get("code"); code != "" {
		u, err := a.org.UnitByCode(r.Context(), actor(r, p), code)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"units": []org.Unit{u}})
		return
	}
	limit, e := queryInt(q, "limit", 0)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	units, err := a.org.SearchUnits(r.Context(), actor(r, p), q.Get("q"), int(limit))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"units": units})
}

func (a *API) getUnit(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		u, err := a.org.Unit(r.Context(), actor(r, p), id)
		return u, http.StatusOK, err
	})
}

func (a *API) updateUnit(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req org.UnitPatch
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		u, err := a.org.UpdateUnit(r.Context(), actor(r, p), id, req)
		return u, http.StatusOK, err
	})
}

type moveUnitRequest struct {
	ParentID int64 `json:"parent_id"`
}

func (a *API) moveUnit(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req moveUnitRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		if req.ParentID <= 0 {
			return nil, 0, invalidField("parent_id", "required")
		}
		u, err := a.org.MoveUnit(r.Context(), actor(r, p), id, req.ParentID)
		return u, http.StatusOK, err
	})
}

func (a *API) dissolveUnit(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		u, err := a.org.DissolveUnit(r.Context(), actor(r, p), id)
		return u, http.StatusOK, err
	})
}

func (a *API) unitChildren(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	units, err := a.org.Children(r.Context(), actor(r, p), id, r.URL.Query().Get("include_dissolved") == "true")
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeUnits(w, units, nil)
}

func (a *API) unitAncestors(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	units, err := a.org.Ancestors(r.Context(), actor(r, p), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeUnits(w, units, nil)
}

func (a *API) unitSubtree(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	q := r.URL.Query()
	var sq org.SubtreeQuery
	if l := q.Get("level"); l != "" {
		lv, err := org.ParseLevel(l)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		sq.Level = lv
	}
	after, e := queryInt(q, "cursor", 0)
	if e == nil && after < 0 {
		e = invalidField("cursor", "not a cursor this server gave out")
	}
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	limit, e := queryInt(q, "limit", 0)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	sq.After, sq.Limit, sq.Status = after, int(limit), q.Get("status")
	units, next, err := a.org.Subtree(r.Context(), actor(r, p), id, sq)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	cursor := cursorString(next)
	writeUnits(w, units, &cursor)
}

// writeUnits writes {"next_cursor": …, "units": […]} (next_cursor only
// when given) with status 200, byte for byte what writeJSON would write for
// the same map, but without reflection: the tree reads are the hottest
// org requests, and a subtree page of 500 units took longer to encode with
// encoding/json than to read from PostgreSQL.
func writeUnits(w http.ResponseWriter, units []org.Unit, next *string) {
	bp := unitBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			unitBufs.Put(bp)
		}
	}()
	b := (*bp)[:0]
	b = append(b, '{')
	if next != nil {
		b = append(b, `"next_cursor":`...)
		b = org.AppendJSONString(b, *next)
		b = append(b, ',')
	}
	b = append(b, `"units":`...)
	if units == nil {
		b = append(b, "null"...)
	} else {
		b = org.AppendUnitsJSON(b, units)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	*bp = b
}

// unitBufs keeps the encoding buffers of writeUnits (a subtree page is about
// 100 KB), so the hottest org reads do not feed the garbage collector.
var unitBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func cursorString(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

func (a *API) unitMembers(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		q := r.URL.Query()
		limit, e := queryInt(q, "limit", 0)
		if e != nil {
			return nil, 0, e
		}
		ms, next, err := a.org.Members(r.Context(), actor(r, p), id, q.Get("cursor"), int(limit))
		return map[string]any{"members": ms, "next_cursor": next}, http.StatusOK, err
	})
}

func (a *API) unitStats(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		st, err := a.org.Stats(r.Context(), actor(r, p), id)
		return st, http.StatusOK, err
	})
}

func (a *API) addMember(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req org.NewMember
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		pos, err := a.org.AddMember(r.Context(), actor(r, p), id, req)
		if err == nil {
			w.Header().Set("Location", "/v1/org/people/"+strconv.FormatInt(pos.AccountID, 10))
		}
		return pos, http.StatusCreated, err
	})
}

func (a *API) searchPeople(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	limit, e := queryInt(q, "limit", 0)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	ms, next, err := a.org.SearchPeople(r.Context(), actor(r, p), q.Get("q"), q.Get("cursor"), int(limit))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": ms, "next_cursor": next})
}

func (a *API) personCard(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		c, err := a.org.Card(r.Context(), actor(r, p), id)
		return c, http.StatusOK, err
	})
}

func (a *API) updatePosition(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req org.PositionPatch
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		pos, err := a.org.UpdatePosition(r.Context(), actor(r, p), id, req)
		return pos, http.StatusOK, err
	})
}

type movePositionRequest struct {
	UnitID int64 `json:"unit_id"`
}

func (a *API) movePosition(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		var req movePositionRequest
		if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
			return nil, 0, e
		}
		if req.UnitID <= 0 {
			return nil, 0, invalidField("unit_id", "required")
		}
		pos, err := a.org.MovePosition(r.Context(), actor(r, p), id, req.UnitID)
		return pos, http.StatusOK, err
	})
}

func (a *API) removePosition(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	a.withID(w, r, func(id int64) (any, int, error) {
		return nil, http.StatusNoContent, a.org.RemovePosition(r.Context(), actor(r, p), id)
	})
}

func (a *API) orgChanges(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	since, e := queryInt(q, "since", 0)
	if e == nil {
		var limit int64
		limit, e = queryInt(q, "limit", 0)
		if e == nil {
			cs, err := a.org.Changes(r.Context(), actor(r, p), since, int(limit))
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, cs)
			return
		}
	}
	writeAPIError(w, r, e)
}

func (a *API) listGrants(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	account, e := queryInt(r.URL.Query(), "account_id", p.AccountID)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	gs, err := a.org.Grants(r.Context(), actor(r, p), account)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": gs})
}

type grantRequest struct {
	AccountID int64      `json:"account_id"`
	Role      authz.Role `json:"role"`
	UnitID    int64      `json:"unit_id"`
}

func (req grantRequest) validate() *Error {
	switch {
	case req.AccountID <= 0:
		return invalidField("account_id", "required")
	case req.Role == "":
		return invalidField("role", "required")
	case req.UnitID <= 0:
		return invalidField("unit_id", "required")
	}
	return nil
}

func (a *API) grantRole(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	var req grantRequest
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	if e := req.validate(); e != nil {
		writeAPIError(w, r, e)
		return
	}
	if err := a.org.Grant(r.Context(), actor(r, p), req.AccountID, req.Role, req.UnitID); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, req)
}

func (a *API) revokeRole(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	var req grantRequest
	var e *Error
	if req.AccountID, e = queryInt(q, "account_id", 0); e == nil {
		if req.UnitID, e = queryInt(q, "unit_id", 0); e == nil {
			req.Role = authz.Role(q.Get("role"))
			e = req.validate()
		}
	}
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	if err := a.org.Revoke(r.Context(), actor(r, p), req.AccountID, req.Role, req.UnitID); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) auditLog(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	q := r.URL.Query()
	var aq authz.AuditQuery
	var e *Error
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"actor_id", &aq.ActorID}, {"unit_id", &aq.UnitID}, {"cursor", &aq.Before}} {
		if *f.dst, e = queryInt(q, f.name, 0); e != nil {
			writeAPIError(w, r, e)
			return
		}
	}
	limit, e := queryInt(q, "limit", 0)
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	if limit == 0 {
		limit = 100
	}
	if limit < 1 || limit > 1000 {
		writeAPIError(w, r, invalidField("limit", "1-1000"))
		return
	}
	aq.Limit = int(limit)
	switch k := authz.AuditKind(q.Get("kind")); k {
	case "", authz.AuditGrant, authz.AuditRevoke, authz.AuditDenied:
		aq.Kind = k
	default:
		writeAPIError(w, r, invalidField("kind", "grant, revoke or denied"))
		return
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"since", &aq.Since}, {"until", &aq.Until}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeAPIError(w, r, invalidField(f.name, "an RFC 3339 time such as 2026-11-23T09:00:00Z"))
				return
			}
			*f.dst = t
		}
	}
	entries, err := a.org.Audit(r.Context(), actor(r, p), aq)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	next := ""
	if len(entries) == aq.Limit {
		next = strconv.FormatInt(entries[len(entries)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "next_cursor": next})
}
