package mobileapi

import (
	"net/http"
	"strconv"

	"github.com/zhangban/zhangban/internal/auth"
)

type loginRequest struct {
	Login    string `json:"login"`
	Password string `json:"password"`
	Device   string `json:"device"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if e := decodeJSON(w, r, 4<<10, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	switch {
	case req.Login == "":
		writeAPIError(w, r, invalidField("login", "required"))
		return
	case req.Password == "":
		writeAPIError(w, r, invalidField("password", "required"))
		return
	}
	pair, err := a.auth.Login(r.Context(), auth.LoginRequest{Login: req.Login, Password: req.Password, Device: req.Device, ClientAddr: clientAddr(r)})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, pair)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
	Device       string `json:"device"`
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if e := decodeJSON(w, r, 4<<10, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	if req.RefreshToken == "" {
		writeAPIError(w, r, invalidField("refresh_token", "required"))
		return
	}
	pair, err := a.auth.Refresh(r.Context(), req.RefreshToken, req.Device)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, pair)
}

func (a *API) logout(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if err := a.auth.Logout(r.Context(), p); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) me(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	acc, err := a.auth.Account(r.Context(), p.AccountID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, acc)
}

// requireSuperuser guards account administration until the organisation's
// permissions take it over.
func requireSuperuser(w http.ResponseWriter, r *http.Request, p auth.Principal) bool {
	if !p.Superuser {
		writeAPIError(w, r, apiErr(CodePermissionDenied, "only an administrator may manage accounts"))
		return false
	}
	return true
}

func (a *API) createAccount(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	if !requireSuperuser(w, r, p) {
		return
	}
	var req auth.NewAccount
	if e := decodeJSON(w, r, maxBodyDefault, &req); e != nil {
		writeAPIError(w, r, e)
		return
	}
	acc, err := a.auth.CreateAccount(r.Context(), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/accounts/"+strconv.FormatInt(acc.ID, 10))
	writeJSON(w, http.StatusCreated, acc)
}

// pathID reads a positive integer path parameter.
func pathID(r *http.Request, name string) (int64, *Error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, invalidField(name, "must be a positive integer")
	}
	return id, nil
}

func (a *API) getAccount(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	if id != p.AccountID && !requireSuperuser(w, r, p) {
		return
	}
	acc, err := a.auth.Account(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, acc)
}

func (a *API) listSessions(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e != nil {
		writeAPIError(w, r, e)
		return
	}
	if id != p.AccountID && !requireSuperuser(w, r, p) {
		return
	}
	ss, err := a.auth.Sessions(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": ss})
}

func (a *API) revokeSession(w http.ResponseWriter, r *http.Request, p auth.Principal) {
	id, e := pathID(r, "id")
	if e == nil {
		var sid int64
		sid, e = pathID(r, "sid")
		if e == nil {
			if id != p.AccountID && !requireSuperuser(w, r, p) {
				return
			}
			reason := "revoked by the account holder"
			if id != p.AccountID {
				reason = "revoked by administrator " + strconv.FormatInt(p.AccountID, 10)
			}
			if err := a.auth.RevokeSession(r.Context(), id, sid, reason); err != nil {
				a.writeError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	writeAPIError(w, r, e)
}
