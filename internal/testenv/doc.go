// Package testenv gives tests real PostgreSQL and NATS, never mocks.
//
// A test binary calls Main from TestMain. With TEST_DATABASE_URL set, that
// server is used (the role needs CREATEDB); otherwise Main starts one managed
// PostgreSQL for the whole binary in a temporary directory, tuned for speed
// (fsync off), and removes it afterwards. Main migrates a template database
// once; DB then gives each test its own database cloned from the template,
// so tests run in parallel without seeing each other's rows.
//
// The package-level state below is written once by Main before any test runs
// and only read afterwards.
package testenv
