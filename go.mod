module github.com/gokcm/kcm

go 1.26.8
