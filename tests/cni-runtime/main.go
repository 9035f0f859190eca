// cni-runtime drives CNI plugins through libcni, the library container runtimes use, so tests
// exercise the hostnic plugin the way containerd and CRI-O do. It is built from Debian's
// golang-github-appc-cni-dev sources (see shared/reference/test-lab.md):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off CGO_ENABLED=0 go build
//
// Usage:
//
//	cni-runtime [flags] add|check|del CONFLIST CONTAINER_ID NETNS IFNAME
//	cni-runtime [flags] validate CONFLIST
//	cni-runtime [flags] bench -n N [-fresh] NETNS IFNAME CONFLIST...
//
// Flags: -path DIRS (plugin dirs, colon-separated; default $CNI_PATH), -cache-dir DIR (libcni's
// result cache, required for add/check/del),
// -args 'K=V;K=V' (CNI_ARGS), -cap JSON (capability args, e.g. '{"portMappings": [...]}').
// add prints the result JSON; validate prints the capabilities; bench prints one JSON object
// per conflist with ADD, DEL and ADD+DEL timings in milliseconds; with -fresh, every ADD+DEL
// gets a netns of its own, made before the ADD and deleted after the DEL (both untimed), as a
// runtime does for each sandbox, NETNS being the name of a netns whose siblings these are. Failures print the error on
// stderr (and a plugin's CNI error JSON on stdout) and exit 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

type runtime struct {
	cni     *libcni.CNIConfig
	args    [][2]string
	capArgs map[string]interface{}
}

func main() {
	pathFlag := flag.String("path", os.Getenv("CNI_PATH"), "plugin directories, colon-separated")
	cacheDir := flag.String("cache-dir", "", "libcni result cache directory (required by add/check/del, which share it; bench and validate default to a temp dir)")
	argsFlag := flag.String("args", "", "CNI_ARGS as K=V;K=V")
	capFlag := flag.String("cap", "", "capability args as a JSON object")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: cni-runtime [flags] add|check|del CONFLIST CONTAINER_ID NETNS IFNAME")
		fmt.Fprintln(os.Stderr, "       cni-runtime [flags] validate CONFLIST")
		fmt.Fprintln(os.Stderr, "       cni-runtime [flags] bench -n N [-fresh] NETNS IFNAME CONFLIST...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if *pathFlag == "" {
		fail(fmt.Errorf("no plugin path: set -path or CNI_PATH"))
	}
	cmd, rest := flag.Arg(0), flag.Args()[1:]
	if *cacheDir == "" && (cmd == "add" || cmd == "check" || cmd == "del") {
		// libcni's default (/var/lib/cni) would mix test state into the host's.
		fail(fmt.Errorf("%s needs -cache-dir: CHECK and DEL read the result ADD cached there", cmd))
	}
	if *cacheDir == "" {
		dir, err := os.MkdirTemp("", "cni-runtime-cache-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(dir)
		*cacheDir = dir
	}
	rt := runtime{cni: libcni.NewCNIConfigWithCacheDir(filepath.SplitList(*pathFlag), *cacheDir, nil)}
	var err error
	if rt.args, err = parseArgs(*argsFlag); err != nil {
		fail(err)
	}
	if *capFlag != "" {
		if err := json.Unmarshal([]byte(*capFlag), &rt.capArgs); err != nil {
			fail(fmt.Errorf("-cap is not a JSON object: %v", err))
		}
	}

	ctx := context.Background()
	switch cmd {
	case "add", "check", "del":
		if len(rest) != 4 {
			flag.Usage()
			os.Exit(2)
		}
		list := loadList(rest[0])
		conf := rt.conf(rest[1], rest[2], rest[3])
		switch cmd {
		case "add":
			res, err := rt.cni.AddNetworkList(ctx, list, conf)
			if err != nil {
				fail(err)
			}
			out, err := json.Marshal(res)
			if err != nil {
				fail(err)
			}
			fmt.Println(string(out))
		case "check":
			if err := rt.cni.CheckNetworkList(ctx, list, conf); err != nil {
				fail(err)
			}
		case "del":
			if err := rt.cni.DelNetworkList(ctx, list, conf); err != nil {
				fail(err)
			}
		}
	case "validate":
		if len(rest) != 1 {
			flag.Usage()
			os.Exit(2)
		}
		caps, err := rt.cni.ValidateNetworkList(ctx, loadList(rest[0]))
		if err != nil {
			fail(err)
		}
		sort.Strings(caps)
		out, _ := json.Marshal(map[string]interface{}{"capabilities": caps})
		fmt.Println(string(out))
	case "bench":
		bench(ctx, rt, rest)
	default:
		fail(fmt.Errorf("unknown subcommand %q", cmd))
	}
}

func (rt runtime) conf(containerID, netns, ifname string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifname,
		Args:           rt.args,
		CapabilityArgs: rt.capArgs,
	}
}

func parseArgs(raw string) ([][2]string, error) {
	var out [][2]string
	for _, pair := range strings.Split(raw, ";") {
		if pair == "" {
			continue
		}
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 {
			return nil, fmt.Errorf("-args: %q is not K=V", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

func loadList(path string) *libcni.NetworkConfigList {
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		fail(err)
	}
	return list
}

// fail reports err and exits 1. A plugin's CNI error is also printed on stdout as the spec's
// error JSON, so callers can check its code.
func fail(err error) {
	fmt.Fprintln(os.Stderr, "cni-runtime:", err)
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out, _ := json.Marshal(cniErr)
		fmt.Println(string(out))
	}
	os.Exit(1)
}

type stats struct {
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Mean float64 `json:"mean_ms"`
}

type benchResult struct {
	Network    string `json:"network"`
	Conflist   string `json:"conflist"`
	Iterations int    `json:"iterations"`
	Add        stats  `json:"add"`
	Del        stats  `json:"del"`
	AddDel     stats  `json:"add_del"`
}

// bench runs N ADD+DEL cycles per conflist, each with a fresh container id, and prints the
// timings of each conflist as one JSON line. Conflists take turns every iteration, so machine
// noise hits them alike.
func bench(ctx context.Context, rt runtime, args []string) {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	n := fs.Int("n", 50, "iterations per conflist")
	fresh := fs.Bool("fresh", false, "a new netns (a sibling of NETNS) for every ADD+DEL, as runtimes make one per sandbox")
	if err := fs.Parse(args); err != nil {
		fail(err)
	}
	if fs.NArg() < 3 || *n < 1 {
		flag.Usage()
		os.Exit(2)
	}
	netns, ifname, paths := fs.Arg(0), fs.Arg(1), fs.Args()[2:]
	lists := make([]*libcni.NetworkConfigList, len(paths))
	for i, p := range paths {
		lists[i] = loadList(p)
	}
	adds := make([][]float64, len(lists))
	dels := make([][]float64, len(lists))
	both := make([][]float64, len(lists))
	for it := 0; it < *n; it++ {
		for i, list := range lists {
			sandbox := netns
			if *fresh {
				name := fmt.Sprintf("%s-%d-%d", filepath.Base(netns), i, it)
				ipNetns("add", name)
				sandbox = filepath.Join(filepath.Dir(netns), name)
			}
			conf := rt.conf(fmt.Sprintf("bench-%d-%d-%d", os.Getpid(), i, it), sandbox, ifname)
			done := func() {
				if *fresh {
					ipNetns("del", filepath.Base(sandbox))
				}
			}
			start := time.Now()
			if _, err := rt.cni.AddNetworkList(ctx, list, conf); err != nil {
				done()
				fail(fmt.Errorf("%s: ADD %d: %v", list.Name, it, err))
			}
			mid := time.Now()
			if err := rt.cni.DelNetworkList(ctx, list, conf); err != nil {
				done()
				fail(fmt.Errorf("%s: DEL %d: %v", list.Name, it, err))
			}
			end := time.Now()
			done()
			adds[i] = append(adds[i], ms(mid.Sub(start)))
			dels[i] = append(dels[i], ms(end.Sub(mid)))
			both[i] = append(both[i], ms(end.Sub(start)))
		}
	}
	for i, list := range lists {
		out, _ := json.Marshal(benchResult{
			Network: list.Name, Conflist: paths[i], Iterations: *n,
			Add: summarize(adds[i]), Del: summarize(dels[i]), AddDel: summarize(both[i]),
		})
		fmt.Println(string(out))
	}
}

// ipNetns runs `ip netns VERB NAME` in the parent's mount namespace: under `ip netns exec`
// this process has one of its own, and a netns mounted there would be invisible to the agent
// and the plugins (the parent's mounts still propagate here).
func ipNetns(verb, name string) {
	mnt := fmt.Sprintf("--mount=/proc/%d/ns/mnt", os.Getppid())
	if out, err := exec.Command("nsenter", mnt, "ip", "netns", verb, name).CombinedOutput(); err != nil {
		fail(fmt.Errorf("ip netns %s %s: %v: %s", verb, name, err, out))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func summarize(xs []float64) stats {
	sorted := append([]float64(nil), xs...)
	sort.Float64s(sorted)
	sum := 0.0
	for _, x := range sorted {
		sum += x
	}
	at := func(q float64) float64 {
		i := int(q*float64(len(sorted)-1) + 0.5)
		return sorted[i]
	}
	return stats{P50: at(0.50), P99: at(0.99), Mean: sum / float64(len(sorted))}
}
