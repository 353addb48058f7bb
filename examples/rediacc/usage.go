package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Usage errors raised before a command runs — an unknown command or flag,
// a flag without its value, a value its flag refuses — echo what was typed
// the way every other message of the CLI does (quoted: Go syntax with
// control characters escaped, cut to 64 characters with the length), and
// exit 5. cobra and pflag would echo it whole (a flag name of a megabyte,
// an escape sequence in an unknown command) and unquoted.

// flagError re-renders a flag parsing error of c (cobra's FlagErrorFunc).
func flagError(c *cobra.Command, err error) error {
	var (
		notExist *pflag.NotExistError
		needsArg *pflag.ValueRequiredError
		invalid  *pflag.InvalidValueError
		syntax   *pflag.InvalidSyntaxError
	)
	switch {
	case errors.As(err, &notExist):
		if sh := notExist.GetSpecifiedShortnames(); sh != "" {
			err = fmt.Errorf("unknown shorthand flag %s in %s", quoted(notExist.GetSpecifiedName()[:1]), quoted("-"+sh))
		} else {
			err = fmt.Errorf("unknown flag %s", quoted("--"+notExist.GetSpecifiedName()))
		}
	case errors.As(err, &needsArg):
		if sh := needsArg.GetSpecifiedShortnames(); sh != "" {
			err = fmt.Errorf("flag -%s needs a value (in %s)", needsArg.GetFlag().Shorthand, quoted("-"+sh))
		} else {
			err = fmt.Errorf("flag --%s needs a value", needsArg.GetFlag().Name)
		}
	case errors.As(err, &invalid):
		v := invalid.GetValue()
		err = fmt.Errorf("invalid value %s for --%s: %s", quoted(v), invalid.GetFlag().Name, boundEcho(causeOf(invalid), v))
	case errors.As(err, &syntax):
		err = fmt.Errorf("bad flag syntax %s", quoted(syntax.GetSpecifiedFlag()))
	}
	return usageError{fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
}

// causeOf is why a flag's value was refused, without pflag's own prefix.
func causeOf(e *pflag.InvalidValueError) string {
	if u := errors.Unwrap(e); u != nil {
		return u.Error()
	}
	return e.Error()
}

// boundEcho replaces, in msg, the user's input v (raw, or Go-quoted as
// strconv errors quote it) with its bounded, escaped form.
func boundEcho(msg, v string) string {
	if v == "" {
		return msg
	}
	q := quoted(v)
	msg = strings.ReplaceAll(msg, fmt.Sprintf("%q", v), q)
	if !strings.Contains(msg, q) || len(v) > 64 {
		msg = strings.ReplaceAll(msg, v, q)
	}
	return msg
}

// unknownSubcommand is the Args of a command that only groups others: an
// argument names a subcommand it does not have.
func unknownSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %s for %s", quoted(args[0]), c.CommandPath())
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usagef("%s (see %s --help)", msg, c.CommandPath())
}

// boundUsage gives every command of the tree rooted at root that groups
// others unknownSubcommand as its Args (a group that runs nothing itself
// shows its help when called alone, as before), and every command
// flagError. cobra's own help and completion commands are added first, so
// they are covered too.
func boundUsage(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.SetFlagErrorFunc(flagError)
		if c.HasSubCommands() {
			c.Args = unknownSubcommand
			if !c.Runnable() {
				c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// quotedArgs quotes arguments for a message: each bounded (quoted), at most
// the first three, then how many there were.
func quotedArgs(args []string) string {
	qs := make([]string, 0, min(len(args), 3))
	for _, a := range args[:min(len(args), 3)] {
		qs = append(qs, quoted(a))
	}
	s := strings.Join(qs, " ")
	if len(args) > 3 {
		s += fmt.Sprintf(" …(%d arguments in all)", len(args))
	}
	return s
}
