package parser_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaks a goroutine (the memcached test starts
// a process and a goroutine waiting for it).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
