package pgmanaged

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Bounds of shared_buffers, which is an eighth of the memory the machine
// (or its cgroup) allows. PostgreSQL's own default, 128 MB, is the floor.
// A busy node's working set is the recent leaves of the message indexes
// (one per active sender and conversation); with 128 MB they did not fit,
// and backends, the committing one among them, read pages back and wrote
// evicted dirty pages themselves (docs/benchmarks.md, session 20).
const (
	minSharedBuffersMB = 128
	maxSharedBuffersMB = 4096
)

// sharedBuffersMB is the shared_buffers setting for memBytes of memory (0:
// unknown).
func sharedBuffersMB(memBytes uint64) uint64 {
	return min(max(memBytes/8>>20, minSharedBuffersMB), maxSharedBuffersMB)
}

// memoryLimit is the memory this process may use: the machine's
// (/proc/meminfo MemTotal), or its cgroup's limit if lower; 0 if neither
// can be read.
func memoryLimit() uint64 {
	total := memTotal()
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(f); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
				total = n
			}
		}
	}
	return total
}

func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var kb uint64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}
