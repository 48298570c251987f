package org

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of the org package; the API maps them to codes in one place.
var (
	ErrNotFound      = errors.New("not found")
	ErrInvalid       = errors.New("invalid")
	ErrLevelMismatch = errors.New("a unit's level must be one below its parent's")
	ErrCycle         = errors.New("a unit cannot move under itself or its own descendant")
	ErrDuplicateCode = errors.New("another unit already has this code")
	ErrDissolved     = errors.New("the unit is dissolved")
	ErrBlocked       = errors.New("the unit cannot be dissolved while something still depends on it")
	ErrConflict      = errors.New("conflicting change")
)

// InvalidError names the field that is wrong.
type InvalidError struct {
	Field, Problem string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Problem }
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Blocker is one thing that stops a unit from being dissolved.
type Blocker struct {
	Kind  string `json:"kind"` // active_children, members, open_work
	Count int64  `json:"count"`
	// Sample names a few of them so the user knows where to look.
	Sample []string `json:"sample,omitempty"`
}

// BlockedError lists what blocks a dissolution.
type BlockedError struct {
	Blockers []Blocker
}

func (e *BlockedError) Error() string {
	var parts []string
	for _, b := range e.Blockers {
		parts = append(parts, fmt.Sprintf("%d %s", b.Count, strings.ReplaceAll(b.Kind, "_", " ")))
	}
	return "the unit still has " + strings.Join(parts, ", ") + ": move or close them first"
}

func (e *BlockedError) Unwrap() error { return ErrBlocked }
