// Command exportcheck fails when a package's exported API mentions a type
// that a program outside the module cannot name: a type from an internal/
// package, or an unexported type. It walks every exported constant,
// variable, function, type, exported struct field and exported method of the
// packages matching its arguments (go list patterns, internal/ and main
// packages skipped) and prints one line per mention.
//
// With -uses DIR -of PKG,PKG it also checks that the program in DIR (a
// module of its own, loaded without go.work, as a user's program is built)
// calls every exported function and method of the listed packages.
//
// Usage, from the repository root:
//
//	exportcheck [-uses .ci/apicheck -of github.com/…/tiered,github.com/…/store] ./...
package main

import (
	"flag"
	"fmt"
	"go/types"
	"os"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
)

func main() {
	usesDir := flag.String("uses", "", "a module directory whose program must call every exported function and method of -of")
	of := flag.String("of", "", "comma-separated import paths that -uses must cover")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedTypes | packages.NeedImports | packages.NeedDeps}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "exportcheck:", err)
		os.Exit(2)
	}
	if packages.PrintErrors(pkgs) > 0 {
		os.Exit(2)
	}
	var problems []string
	checked := 0
	byPath := map[string]*types.Package{}
	for _, p := range pkgs {
		if p.Name == "main" || isInternal(p.PkgPath) {
			continue
		}
		checked++
		byPath[p.PkgPath] = p.Types
		problems = append(problems, check(p.Types)...)
	}
	if *usesDir != "" {
		var cover []*types.Package
		for _, path := range strings.Split(*of, ",") {
			p, ok := byPath[path]
			if !ok {
				fmt.Fprintf(os.Stderr, "exportcheck: -of %s is not among the checked packages\n", path)
				os.Exit(2)
			}
			cover = append(cover, p)
		}
		missing, err := uncalled(*usesDir, cover)
		if err != nil {
			fmt.Fprintln(os.Stderr, "exportcheck:", err)
			os.Exit(2)
		}
		problems = append(problems, missing...)
	}
	sort.Strings(problems)
	for _, s := range problems {
		fmt.Println(s)
	}
	if len(problems) > 0 {
		fmt.Printf("exportcheck: %d problems\n", len(problems))
		os.Exit(1)
	}
	fmt.Printf("exportcheck: %d packages, no exported identifier mentions an internal or unexported type", checked)
	if *usesDir != "" {
		fmt.Printf("; %s calls every exported function and method of %s", *usesDir, *of)
	}
	fmt.Println()
}

// uncalled loads the program in dir as its own module and returns the
// exported functions and methods of cover it never refers to.
func uncalled(dir string, cover []*types.Package) ([]string, error) {
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedTypes | packages.NeedTypesInfo | packages.NeedSyntax | packages.NeedImports | packages.NeedDeps,
		Dir:  dir,
		Env:  append(os.Environ(), "GOWORK=off"),
	}
	pkgs, err := packages.Load(cfg, "./...")
	if err != nil {
		return nil, err
	}
	if packages.PrintErrors(pkgs) > 0 {
		return nil, fmt.Errorf("%s does not build", dir)
	}
	used := map[string]bool{}
	for _, p := range pkgs {
		for _, obj := range p.TypesInfo.Uses {
			if f, ok := obj.(*types.Func); ok {
				used[funcKey(f.Origin())] = true
			}
		}
	}
	var missing []string
	for _, pkg := range cover {
		scope := pkg.Scope()
		for _, name := range scope.Names() {
			obj := scope.Lookup(name)
			if !obj.Exported() {
				continue
			}
			var fns []*types.Func
			switch o := obj.(type) {
			case *types.Func:
				fns = append(fns, o)
			case *types.TypeName:
				if n, ok := o.Type().(*types.Named); ok {
					for i := range n.NumMethods() {
						if m := n.Method(i); m.Exported() {
							fns = append(fns, m)
						}
					}
				}
			}
			for _, f := range fns {
				if !used[funcKey(f)] {
					missing = append(missing, fmt.Sprintf("%s: never called by %s", funcKey(f), dir))
				}
			}
		}
	}
	return missing, nil
}

// funcKey names a function or method the same way in two loads:
// path.Func or path.Type.Method.
func funcKey(f *types.Func) string {
	key := f.Pkg().Path() + "."
	if recv := f.Signature().Recv(); recv != nil {
		t := recv.Type()
		if p, ok := t.(*types.Pointer); ok {
			t = p.Elem()
		}
		if n, ok := t.(*types.Named); ok {
			key += n.Origin().Obj().Name() + "."
		}
	}
	return key + f.Name()
}

func isInternal(path string) bool {
	return strings.HasSuffix(path, "/internal") || strings.Contains(path, "/internal/") ||
		strings.HasPrefix(path, "internal/")
}

// checker walks the API of one package.
type checker struct {
	pkg      *types.Package
	problems []string
	seen     map[types.Type]bool // per mention site, to stop on recursive types
}

func check(pkg *types.Package) []string {
	c := &checker{pkg: pkg}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		site := pkg.Name() + "." + name
		switch o := obj.(type) {
		case *types.TypeName:
			c.typeName(site, o)
		default:
			c.walk(site, obj.Type())
		}
	}
	return c.problems
}

func (c *checker) typeName(site string, o *types.TypeName) {
	if a, ok := o.Type().(*types.Alias); ok {
		c.walk(site, a.Rhs())
		return
	}
	n, ok := o.Type().(*types.Named)
	if !ok {
		return
	}
	if tp := n.TypeParams(); tp != nil {
		for i := range tp.Len() {
			c.walk(site+"["+tp.At(i).Obj().Name()+"]", tp.At(i).Constraint())
		}
	}
	c.walkUnder(site, n.Underlying())
	// Exported methods, on T and *T.
	for _, t := range []types.Type{n, types.NewPointer(n)} {
		ms := types.NewMethodSet(t)
		for i := range ms.Len() {
			m := ms.At(i).Obj()
			if !m.Exported() || m.Pkg() != c.pkg {
				continue
			}
			c.walk(site+"."+m.Name(), m.Type())
		}
	}
}

// walkUnder walks a declared type's structure: exported fields of a struct,
// methods of an interface, the rest as any type.
func (c *checker) walkUnder(site string, t types.Type) {
	switch u := t.(type) {
	case *types.Struct:
		for i := range u.NumFields() {
			f := u.Field(i)
			if f.Exported() {
				c.walk(site+"."+f.Name(), f.Type())
			}
		}
	case *types.Interface:
		for i := range u.NumMethods() {
			m := u.Method(i)
			if m.Exported() {
				c.walk(site+"."+m.Name(), m.Type())
			}
		}
		for i := range u.NumEmbeddeds() {
			c.walk(site, u.EmbeddedType(i))
		}
	default:
		c.walk(site, t)
	}
}

func (c *checker) report(site string, t types.Type, why string) {
	c.problems = append(c.problems, fmt.Sprintf("%s: %s: %s", site, types.TypeString(t, nil), why))
}

// walk reports every type in t that a user cannot name.
func (c *checker) walk(site string, t types.Type) {
	c.seen = map[types.Type]bool{}
	c.walk1(site, t)
}

func (c *checker) walk1(site string, t types.Type) {
	if t == nil || c.seen[t] {
		return
	}
	c.seen[t] = true
	switch x := t.(type) {
	case *types.Alias:
		if obj := x.Obj(); obj.Pkg() != nil && isInternal(obj.Pkg().Path()) {
			c.report(site, t, "an alias from an internal package")
			return
		}
		c.walk1(site, x.Rhs())
	case *types.Named:
		obj := x.Obj()
		if obj.Pkg() != nil {
			switch {
			case isInternal(obj.Pkg().Path()):
				c.report(site, t, "a type from an internal package")
			case !obj.Exported():
				c.report(site, t, "an unexported type")
			}
		}
		if args := x.TypeArgs(); args != nil {
			for i := range args.Len() {
				c.walk1(site, args.At(i))
			}
		}
	case *types.Pointer:
		c.walk1(site, x.Elem())
	case *types.Slice:
		c.walk1(site, x.Elem())
	case *types.Array:
		c.walk1(site, x.Elem())
	case *types.Map:
		c.walk1(site, x.Key())
		c.walk1(site, x.Elem())
	case *types.Chan:
		c.walk1(site, x.Elem())
	case *types.Signature:
		for _, tup := range []*types.Tuple{x.Params(), x.Results()} {
			for i := range tup.Len() {
				c.walk1(site, tup.At(i).Type())
			}
		}
	case *types.Struct:
		for i := range x.NumFields() {
			if f := x.Field(i); f.Exported() {
				c.walk1(site+"."+f.Name(), f.Type())
			}
		}
	case *types.Interface:
		for i := range x.NumMethods() {
			c.walk1(site, x.Method(i).Type())
		}
		for i := range x.NumEmbeddeds() {
			c.walk1(site, x.EmbeddedType(i))
		}
	case *types.Union:
		for i := range x.Len() {
			c.walk1(site, x.Term(i).Type())
		}
	case *types.TypeParam, *types.Basic, *types.Tuple:
	}
}
