package hostcmd

import (
	"reflect"
	"testing"
)

func TestSystemctlArgs(t *testing.T) {
	for _, tc := range []struct {
		verb  string
		units []string
		want  []string // nil: refused
	}{
		{"daemon-reload", nil, []string{"daemon-reload"}},
		{"enable", []string{"bangerd-root.service", "bangerd.service"}, []string{"enable", "--now", "--", "bangerd-root.service", "bangerd.service"}},
		{"disable", []string{"bangerd.service"}, []string{"disable", "--now", "--", "bangerd.service"}},
		{"restart", []string{"bangerd.service"}, []string{"restart", "--", "bangerd.service"}},
		{"show", []string{"bangerd.service"}, []string{"show", "--property=Id,LoadState,ActiveState,SubState,UnitFileState,MainPID,DropInPaths", "--", "bangerd.service"}},
		{"daemon-reload", []string{"x.service"}, nil},
		{"enable", nil, nil},
		{"mask", []string{"bangerd.service"}, nil},
		{"poweroff", nil, nil},
		{"restart", []string{"--force"}, nil},
		{"restart", []string{"multi-user.target"}, nil},
		{"restart", []string{"../x.service"}, nil},
	} {
		got, err := SystemctlArgs(tc.verb, tc.units...)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s %v: accepted as %v", tc.verb, tc.units, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %v = %v, %v; want %v", tc.verb, tc.units, got, err, tc.want)
		}
	}
}

func TestParseSystemctlShow(t *testing.T) {
	st, err := ParseSystemctlShow("Id=bangerd.service\nLoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nMainPID=4242\nDropInPaths=/etc/systemd/system/bangerd.service.d/a.conf /run/systemd/system/bangerd.service.d/b.conf\n")
	if err != nil {
		t.Fatal(err)
	}
	want := UnitState{Name: "bangerd.service", LoadState: "loaded", ActiveState: "active", SubState: "running", UnitFileState: "enabled", MainPID: 4242,
		DropIns: []string{"/etc/systemd/system/bangerd.service.d/a.conf", "/run/systemd/system/bangerd.service.d/b.conf"}}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("got %+v, want %+v", st, want)
	}
	st, err = ParseSystemctlShow("Id=bangerd.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\nMainPID=0\n")
	if err != nil || st.LoadState != "not-found" || st.MainPID != 0 {
		t.Fatalf("not-found unit: %+v, %v", st, err)
	}
	for _, bad := range []string{"", "garbage", "Id=x.service\nLoadState=loaded\nMainPID=-3\n", "Id=x.service\nLoadState=loaded\nMainPID=lots\n"} {
		if _, err := ParseSystemctlShow(bad); err == nil {
			t.Errorf("%q: parsed", bad)
		}
	}
}
