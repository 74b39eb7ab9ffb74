package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("models", "models [flags]", "Lists the models of a running server's repository and their states.", stderr)
	cf := addClientFlags(fs)
	ready := fs.Bool("ready", false, "list only ready models")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *cf.timeout)
	defer cancel()
	svc, closeFn, err := cf.dial(false)
	if err != nil {
		return err
	}
	defer closeFn()
	index, err := svc.RepositoryIndex(ctx, *ready)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATE\tREASON")
	for _, e := range index {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, e.Version, e.State, e.Reason)
	}
	return tw.Flush()
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return loadUnload(ctx, "load", args, stdout, stderr)
}

func runUnload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return loadUnload(ctx, "unload", args, stdout, stderr)
}

func loadUnload(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags(verb, verb+" [flags] MODEL", fmt.Sprintf("Asks a running server to %s a model of its repository.", verb), stderr)
	cf := addClientFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *cf.timeout)
	defer cancel()
	svc, closeFn, err := cf.dial(false)
	if err != nil {
		return err
	}
	defer closeFn()
	name := fs.Arg(0)
	if verb == "load" {
		err = svc.LoadModel(ctx, name)
	} else {
		err = svc.UnloadModel(ctx, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%sed %s\n", verb, name)
	return nil
}
