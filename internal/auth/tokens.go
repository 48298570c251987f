package auth

import (
	"errors"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const issuer = "zhangban"

// accessClaims are the claims of an access token.
type accessClaims struct {
	SessionID int64 `json:"sid"`
	jwt.RegisteredClaims
}

func (r *Keyring) sign(accountID, sessionID int64, now time.Time, ttl time.Duration) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, accessClaims{
		SessionID: sessionID,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   strconv.FormatInt(accountID, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	})
	t.Header["kid"] = r.active.ID
	return t.SignedString(r.active.Secret)
}

// verify checks signature, issuer and expiry and returns account and session.
func (r *Keyring) verify(token string, now time.Time) (accountID, sessionID int64, expires time.Time, err error) {
	var c accessClaims
	_, err = jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if k, ok := r.byID[kid]; ok {
			return k, nil
		}
		return nil, ErrTokenInvalid
	},
		jwt.WithValidMethods([]string{"HS256"}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return 0, 0, time.Time{}, ErrTokenExpired
	case err != nil:
		return 0, 0, time.Time{}, ErrTokenInvalid
	}
	accountID, err = strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || accountID <= 0 || c.SessionID <= 0 {
		return 0, 0, time.Time{}, ErrTokenInvalid
	}
	return accountID, c.SessionID, c.ExpiresAt.Time, nil
}
