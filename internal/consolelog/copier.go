package consolelog

import (
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
)

// copierEnv, set to the cap in bytes, makes a binary that links this
// package run as a copier (see init): the copier is the daemon's own
// binary started again, so there is nothing extra to install or find, and
// the engines' tests (whose test binary starts it) work the same way.
const copierEnv = "BANGER_CONSOLELOG_COPIER"

// CopierName is a copier's argv[0], by which it is found (its log paths
// follow): system uninstall waits for the copiers of the engines it stops.
const CopierName = "banger-consolelog"

func init() {
	if v := os.Getenv(copierEnv); v != "" {
		os.Exit(runCopier(v, os.Args[1:]))
	}
}

// StartCopier starts a copier process that appends what is written to
// each returned pipe to the log of the same index in paths, each capped at
// max bytes (Writer; 0 means DefaultMax). Give the pipes to the process whose output they
// carry, then close them: the copier exits once every writer of every pipe
// has closed it; done is closed when it has exited (seen only while this
// process lives), so what was written is then in the files. The copier
// runs in its own session, like the engines, and outlives the caller.
func StartCopier(paths []string, max int64) (pipes []*os.File, done <-chan struct{}, err error) {
	if max <= 0 {
		max = DefaultMax
	}
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("console log copier: no paths")
	}
	var reads, writes []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	defer closeAll(reads)
	for range paths {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(writes)
			return nil, nil, fmt.Errorf("console log copier: %w", err)
		}
		reads, writes = append(reads, r), append(writes, w)
	}
	// /proc/self/exe is this binary even if its file has been replaced
	// (an upgrade) since it started.
	cmd := exec.Command("/proc/self/exe", paths...)
	cmd.Args[0] = CopierName
	cmd.Env = []string{copierEnv + "=" + strconv.FormatInt(max, 10)}
	cmd.Stdin = reads[0]
	cmd.ExtraFiles = reads[1:]
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		closeAll(writes)
		return nil, nil, fmt.Errorf("console log copier: %w", err)
	}
	exited := make(chan struct{})
	go func() { // reaped here while this process lives, by init after
		cmd.Wait()
		close(exited)
	}()
	return writes, exited, nil
}

// runCopier is the copier process: input i is fd 0, then 3, 4, ...
func runCopier(maxArg string, paths []string) int {
	debug.SetGCPercent(20) // one per VM: keep it small
	max, err := strconv.ParseInt(maxArg, 10, 64)
	if err != nil || len(paths) == 0 {
		fmt.Fprintln(os.Stderr, "banger-consolelog: bad arguments")
		return 2
	}
	if os.Getenv(fifoEnv) != "" {
		return runFIFOCopier(max, paths)
	}
	var wg sync.WaitGroup
	for i, p := range paths {
		fd := 0
		if i > 0 {
			fd = 2 + i
		}
		in := os.NewFile(uintptr(fd), "input")
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyCapped(in, p, max)
		}()
	}
	wg.Wait()
	return 0
}

// copyCapped copies in to the capped log at path until in ends. If the
// log cannot be written, input is still drained so the writer never
// blocks on a full pipe.
func copyCapped(in *os.File, path string, max int64) {
	defer in.Close()
	w, err := Open(path, max)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := in.Read(buf)
		if n > 0 && w != nil {
			if _, err := w.Write(buf[:n]); err != nil {
				w.Close()
				w = nil
			}
		}
		if rerr != nil {
			break
		}
	}
	if err == nil && w != nil {
		w.Close()
	}
}
