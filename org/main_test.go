package org

import (
	"testing"

	"github.com/zhangban/zhangban/internal/auth"
	"github.com/zhangban/zhangban/internal/authz"
	"github.com/zhangban/zhangban/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m, auth.Migrations(), authz.Migrations(), Migrations()) }
