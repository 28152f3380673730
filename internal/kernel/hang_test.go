package kernel

import (
	"encoding/binary"
	"math/rand"
	"os"
	"testing"
	"time"
)

func TestHangHunt(t *testing.T) {
	vmlinux := fakeVmlinux(testVersion, true, 0)
	seeds := [][]byte{fakeBzImage(lz4Legacy(t, vmlinux), testVersion), fakeBzImage(gzipped(t, vmlinux), testVersion)}
	r := rand.New(rand.NewSource(2))
	vals := []uint32{0, 1, 0xffffffff, 0x7fffffff, 512 << 20, 8 << 20, 100, lz4LegacyMagic}
	for i := 0; i < 200000; i++ {
		s := append([]byte{}, seeds[r.Intn(len(seeds))]...)
		for k := 0; k < 1+r.Intn(4); k++ {
			switch r.Intn(4) {
			case 0:
				s[r.Intn(len(s))] = byte(r.Intn(256))
			case 1:
				if len(s) < 8 {
					continue
				}
				p := r.Intn(len(s) - 4)
				binary.LittleEndian.PutUint32(s[p:], vals[r.Intn(len(vals))])
			case 2:
				p := 0x800 + 300 + r.Intn(40)
				if p+4 < len(s) {
					binary.LittleEndian.PutUint32(s[p:], vals[r.Intn(len(vals))])
				}
			case 3:
				s = s[:r.Intn(len(s))+1]
			}
		}
		done := make(chan struct{})
		go func() {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				os.WriteFile("/tmp/hang.bin", s, 0o644)
				panic("hang")
			}
		}()
		extractVmlinux(s)
		close(done)
	}
}
