package redact_test

import (
	"fmt"
	"os"

	"github.com/rediacc/rediacc/internal/redact"
)

func ExampleRedactor_NewWriter() {
	r := redact.New([]byte("hunter2"))
	w := r.NewWriter(os.Stdout)
	// The secret is split across two writes and still masked.
	fmt.Fprint(w, "password is hun")
	fmt.Fprint(w, "ter2\n")
	w.Close()
	// Output:
	// password is ***
}

func ExampleRedactor_String() {
	r := redact.New([]byte("abc"), []byte("cde"))
	fmt.Println(r.String("xabcdey")) // overlapping secrets: one mask for the union
	// Output:
	// x***y
}
