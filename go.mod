module github.com/gokcm/kcm

go 1.26.8

require (
	github.com/cilium/ebpf v0.22.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
)

require golang.org/x/sys v0.49.0 // indirect
