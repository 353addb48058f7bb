package safefs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	private, readable := mk("private", 0o700), mk("readable", 0o755)
	worldW, groupW := mk("world", 0o777), mk("group", 0o770)
	sticky := mk("sticky", 0o1777)
	link := filepath.Join(base, "link")
	if err := os.Symlink(private, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{private, readable} {
		if err := CheckDir(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for p, want := range map[string]string{worldW: "chmod go-w", groupW: "writable by group", sticky: "writable by group",
		link: "symbolic link", file: "not a directory"} {
		if err := CheckDir(p); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrUnsafe saying %q", p, err, want)
		}
	}
	if err := CheckDir(filepath.Join(base, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if err := MkdirPrivate(filepath.Join(base, "new", "sub")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(base, "new", "sub")); fi.Mode().Perm() != 0o700 {
		t.Errorf("MkdirPrivate made mode %s", fi.Mode().Perm())
	}
	dangling := filepath.Join(base, "dangling")
	if err := os.Symlink(filepath.Join(base, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	if err := MkdirPrivate(dangling); !errors.Is(err, ErrUnsafe) {
		t.Errorf("MkdirPrivate through a dangling link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "nowhere")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("MkdirPrivate created the link's target")
	}
}

func TestNoFollow(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(link, os.O_RDWR|os.O_CREATE, 0o600); !errors.Is(err, ErrUnsafe) {
		t.Errorf("OpenFile O_CREATE through a link: %v", err)
	}
	if err := WriteFileExcl(link, []byte("x"), 0o600); err == nil {
		t.Error("WriteFileExcl over a link succeeded")
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a file was created through the link")
	}
	if err := os.WriteFile(target, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(link); !errors.Is(err, ErrUnsafe) {
		t.Errorf("ReadFile through a link: %v", err)
	}
	p := filepath.Join(dir, "own")
	if err := WriteFileExcl(p, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p); err != nil || string(b) != "data" {
		t.Fatalf("ReadFile: %q %v", b, err)
	}
	if err := WriteFileExcl(p, []byte("again"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Errorf("WriteFileExcl over an existing file: %v", err)
	}
}
