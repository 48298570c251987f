package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Parse("serve", nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.DataDir != "./data" || c.AccessTTL != 15*time.Minute || c.DatabaseURL != "" || c.JWTKey != nil || c.DebugAddr != "" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestFlagBeatsEnvironment(t *testing.T) {
	c, err := Parse("serve", []string{"--addr", "127.0.0.1:9000"}, env(map[string]string{"ZHANGBAN_ADDR": "127.0.0.1:7000", "ZHANGBAN_DATA_DIR": "/srv/zb", "ZHANGBAN_DEBUG_ADDR": "127.0.0.1:6060"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9000" || c.DataDir != "/srv/zb" || c.DebugAddr != "127.0.0.1:6060" {
		t.Fatalf("got %s %s %s", c.Addr, c.DataDir, c.DebugAddr)
	}
}

func TestErrorsNameTheSettingAndHideSecrets(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("too-short-secret"))
	_, err := Parse("serve", nil, env(map[string]string{"ZHANGBAN_JWT_KEY": key, "ZHANGBAN_SHUTDOWN_TIMEOUT": "soon"}))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *Error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"--jwt-key (ZHANGBAN_JWT_KEY)", "--shutdown-timeout (ZHANGBAN_SHUTDOWN_TIMEOUT)", "at least 32"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q missing from %q", want, msg)
		}
	}
	if strings.Contains(msg, key) {
		t.Errorf("secret echoed: %s", msg)
	}
}

func TestLogAttrsRedact(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 32)))
	c, err := Parse("serve", nil, env(map[string]string{
		"DATABASE_URL": "postgres://zb:hunter2@db:5432/zb", "NATS_URL": "nats://u:natspw@n1:4222,nats://u:natspw@n2:4222",
		"ZHANGBAN_JWT_KEY": key, "ZHANGBAN_BOOTSTRAP_ADMIN": "root:rootpassword",
	}))
	if err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprint(c.LogAttrs()...)
	for _, secret := range []string{"hunter2", "natspw", key, "rootpassword"} {
		if strings.Contains(s, secret) {
			t.Errorf("secret %q in %s", secret, s)
		}
	}
	if !strings.Contains(s, "db:5432/zb") || !strings.Contains(s, "n2:4222") {
		t.Errorf("hosts should stay visible: %s", s)
	}
}

func TestSendCommitters(t *testing.T) {
	c, err := Parse("serve", nil, env(nil))
	if err != nil || c.SendCommitters != 1 {
		t.Fatalf("default: %d, %v", c.SendCommitters, err)
	}
	c, err = Parse("serve", []string{"--send-committers", "4"}, env(map[string]string{"ZHANGBAN_SEND_COMMITTERS": "2"}))
	if err != nil || c.SendCommitters != 4 {
		t.Fatalf("flag: %d, %v", c.SendCommitters, err)
	}
	for _, bad := range []map[string]string{
		{"ZHANGBAN_SEND_COMMITTERS": "0"},
		{"ZHANGBAN_SEND_COMMITTERS": "65"},
		{"ZHANGBAN_SEND_COMMITTERS": "two"},
		{"ZHANGBAN_SEND_COMMITTERS": "8", "ZHANGBAN_DB_MAX_CONNS": "8"}, // no connection left for anything else
	} {
		_, err := Parse("serve", nil, env(bad))
		if err == nil || !strings.Contains(err.Error(), "--send-committers (ZHANGBAN_SEND_COMMITTERS)") {
			t.Errorf("%v: got %v", bad, err)
		}
	}
}

func TestSendCommitGap(t *testing.T) {
	c, err := Parse("serve", nil, env(nil))
	if err != nil || c.SendCommitGap != 0 {
		t.Fatalf("default: %v, %v", c.SendCommitGap, err)
	}
	c, err = Parse("serve", []string{"--send-commit-gap", "5ms"}, env(map[string]string{"ZHANGBAN_SEND_COMMIT_GAP": "2ms"}))
	if err != nil || c.SendCommitGap != 5*time.Millisecond {
		t.Fatalf("flag: %v, %v", c.SendCommitGap, err)
	}
	for _, bad := range []string{"-1ms", "101ms", "5"} {
		_, err := Parse("serve", nil, env(map[string]string{"ZHANGBAN_SEND_COMMIT_GAP": bad}))
		if err == nil || !strings.Contains(err.Error(), "--send-commit-gap (ZHANGBAN_SEND_COMMIT_GAP)") {
			t.Errorf("%s: got %v", bad, err)
		}
	}
}
