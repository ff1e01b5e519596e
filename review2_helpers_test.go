package kcm_test

import "os"

func errDeadlineExceeded() error { return os.ErrDeadlineExceeded }
