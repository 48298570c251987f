//go:build !linux

package gateway

import (
	"errors"
	"log/slog"
)

// poller is Linux-only (epoll); elsewhere every connection keeps a reading
// goroutine.
type poller struct{}

func newPoller(*slog.Logger) (*poller, error) {
	return nil, errors.New("no poller on this platform")
}

func (p *poller) arm(*Conn) error { return errors.ErrUnsupported }
func (p *poller) forget(*Conn)    {}
func (p *poller) close()          {}
