package qemu

// rdtsc reads the time-stamp counter, serialized by LFENCE.
func rdtsc() uint64

const haveRDTSC = true
