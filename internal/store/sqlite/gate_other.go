//go:build !unix

package sqlite

import "os"

// Without flock the gate only orders this process's writers; other
// processes rely on SQLite's busy timeout.

func tryFlock(*os.File) (bool, error) { return true, nil }
func flock(*os.File) error            { return nil }
func funlock(*os.File) error          { return nil }
