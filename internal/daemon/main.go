package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/roothelper"
	"github.com/bangervm/banger/internal/store"
)

// Main is bangerd's command line; it returns the exit status.
func Main(args []string) int {
	for _, a := range args {
		if a == "--root-helper" || a == "-root-helper" {
			return roothelper.Main(args)
		}
	}
	fs := flag.NewFlagSet("bangerd", flag.ContinueOnError)
	checkMigrations := fs.Bool("check-migrations", false, "report whether the state store needs migrations: exit 0 up to date, 1 pending, 2 store is newer than this binary")
	asJSON := fs.Bool("json", false, "with --check-migrations: print {\"current\": N, \"latest\": M} (current 0: no store yet)")
	logFile := fs.String("log-file", "", "log file (default: bangerd.log in the state dir; - for stderr)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Bool("root-helper", false, "run as the root helper instead (see bangerd --root-helper -h)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	layout := paths.FromEnv()
	if *version {
		fmt.Printf("bangerd %s (commit %s, built %s)\n", buildinfo.Version, buildinfo.Commit, buildinfo.BuildTime)
		return 0
	}
	if *checkMigrations {
		return runCheckMigrations(layout, *asJSON)
	}
	settings, err := config.Load(layout.ConfigFile())
	if err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		return 1
	}
	var w io.Writer = os.Stderr
	if *logFile != "-" {
		path := *logFile
		if path == "" {
			path = layout.DaemonLog()
		}
		if err := layout.Ensure(); err != nil {
			fmt.Fprintln(os.Stderr, "bangerd:", err)
			return 1
		}
		f, err := paths.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bangerd:", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	var level slog.Level
	level.UnmarshalText([]byte(settings.LogLevel))
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if err := Run(ctx, Config{Layout: layout, Settings: settings, Log: log}); err != nil {
		log.Error("bangerd exited", "err", err)
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		if errors.Is(err, ErrAlreadyRunning) {
			return api.ExitDaemonAlreadyRunning
		}
		return 1
	}
	return 0
}

func runCheckMigrations(layout paths.Layout, asJSON bool) int {
	// The JSON form is for banger doctor, which reads the numbers instead
	// of linking SQLite into the CLI.
	report := func(cur, latest, code int, text string) int {
		if asJSON {
			json.NewEncoder(os.Stdout).Encode(struct {
				Current int `json:"current"`
				Latest  int `json:"latest"`
			}{cur, latest})
		} else {
			fmt.Println(text)
		}
		return code
	}
	if _, err := os.Stat(layout.DB()); os.IsNotExist(err) {
		return report(0, store.LatestMigration(), 1, fmt.Sprintf("no state store at %s yet: it is created when bangerd starts", layout.DB()))
	}
	st, err := store.CheckMigrations(context.Background(), layout.DB())
	if err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		return 3
	}
	switch {
	case st.Newer():
		return report(st.Current, st.Latest, 2, fmt.Sprintf("state store is at migration %d, newer than this binary's %d: upgrade banger", st.Current, st.Latest))
	case st.Pending():
		return report(st.Current, st.Latest, 1, fmt.Sprintf("state store is at migration %d of %d: migrations pending (applied when bangerd starts)", st.Current, st.Latest))
	}
	return report(st.Current, st.Latest, 0, fmt.Sprintf("state store is up to date (migration %d)", st.Current))
}
