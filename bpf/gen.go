package bpf

// The test programs' C sources live in testdata; the built objects are
// committed so that tests need no clang. .ci/check-bpf-generated checks that
// regenerating gives the committed bytes.
//go:generate clang -O2 -g0 -target bpf -c testdata/parsers.c -o testdata/parsers.o
//go:generate clang -O2 -g0 -target bpf -c testdata/invalid.c -o testdata/invalid.o
