//go:build race

package gateway

// raceEnabled: the race detector is on, and sync.Pool drops a quarter of
// what is put back, so allocation counts do not hold.
const raceEnabled = true
