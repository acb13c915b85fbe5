package cli_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gmesh-dev/gmesh/internal/cli"
)

// TestFlagUsagesNameNoArgument scans every command's flags: pflag takes a
// backquoted word in a usage as the flag's argument name, so
// "stop with `gmesh down`" made --help print "-d, --detach gmesh down", as if
// the boolean took an argument. No usage may carry a backquote, and no
// boolean flag may show an argument.
func TestFlagUsagesNameNoArgument(t *testing.T) {
	root := cli.New(cli.IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, Err: &bytes.Buffer{}})
	var cmds []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		cmds = append(cmds, c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if len(cmds) < 10 {
		t.Fatalf("found %d commands, want the whole tree", len(cmds))
	}
	checked := 0
	for _, c := range cmds {
		check := func(f *pflag.Flag) {
			checked++
			where := c.CommandPath() + " --" + f.Name
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s: usage %q has a backquote, which --help shows as the argument's name", where, f.Usage)
			}
			name, _ := pflag.UnquoteUsage(f)
			if f.Value.Type() == "bool" && name != "" {
				t.Errorf("%s: boolean flag shows an argument %q in --help", where, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
	}
	if checked == 0 {
		t.Fatal("checked no flag")
	}
}

// TestHelpBooleanFlagsTakeNoArgument reads the --help text a user sees:
// a boolean flag's line is the flag, then its description.
func TestHelpBooleanFlagsTakeNoArgument(t *testing.T) {
	for _, args := range [][]string{{"up", "--help"}, {"deploy", "--help"}, {"down", "--help"}} {
		var out, errb bytes.Buffer
		code := cli.Main(context.Background(), cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb}, args)
		if code != 0 {
			t.Fatalf("gmesh %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		for _, line := range strings.Split(out.String(), "\n") {
			// "  -d, --detach   run in the background ..." : after a boolean
			// flag's name comes at least two spaces.
			if m := regexp.MustCompile(`--(detach|force|follow|watch)( \S)`).FindStringSubmatch(line); m != nil {
				t.Errorf("gmesh %s: %q reads as if --%s took an argument", strings.Join(args, " "), strings.TrimSpace(line), m[1])
			}
		}
	}
}
