package auth

import (
	"testing"

	"github.com/zhangban/zhangban/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, Migrations()) }
