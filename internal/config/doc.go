// Package config reads zhangban's settings from flags and environment
// variables (a flag wins over its variable), validates them, and describes
// the effective configuration for the start-up log with secrets redacted.
//
// Every setting has one flag name and one environment name; errors name both
// so an operator knows what to change.
package config
