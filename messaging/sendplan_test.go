package messaging

import (
	"context"
	"slices"
	"testing"

	"github.com/zhangban/zhangban/internal/testenv"
)

// TestSendUsesGenericPlans: msg_send runs with generic plans (migration
// 0003), so its statements are not planned again on every call; sends of
// one and of many in a batch still store every message (the other tests).
func TestSendUsesGenericPlans(t *testing.T) {
	pool := testenv.DB(t)
	var config []string
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(proconfig, '{}') FROM pg_proc WHERE proname = 'msg_send'`).Scan(&config); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "plan_cache_mode=force_generic_plan") {
		t.Errorf("msg_send's settings are %q, want plan_cache_mode=force_generic_plan", config)
	}
}
