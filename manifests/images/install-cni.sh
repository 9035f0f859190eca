#!/bin/sh
# Installs hostnic's CNI plugins and conflist on the node. The agent DaemonSet runs it twice,
# with the host's CNI directories mounted:
#
#   hostnic-install-cni plugins    init container: installs the plugin binaries: `hostnic`
#                                  always (replacing an older one), `loopback` (containerd sets
#                                  up each pod's `lo` with it) and `portmap` (hostPort) only
#                                  where the node has none, so a node's own copies stay.
#   hostnic-install-cni conflist   container next to the agent: waits until the agent answers
#                                  CNI STATUS "ready" (asked through the installed plugin, the
#                                  way a runtime asks), then installs the conflist and stays
#                                  running. The runtime reports the network ready only once a
#                                  conflist exists, so it never reports one that cannot serve.
#                                  A restart leaves the conflist in place: pods that run keep a
#                                  network config for their CNI DEL while the agent restarts.
#                                  With HOSTNIC_CNI_UNINSTALL=true it removes the conflist and
#                                  the `hostnic` plugin instead (README, Uninstall).
#
# Every file is written to a temporary name in the target directory and then renamed over the
# old one: rename(2) is atomic, so the runtime never reads a half-written conflist or executes
# a half-copied plugin, and a plugin binary that is running is not "text file busy".
#
# Environment (defaults are the DaemonSet's mount points):
#   HOSTNIC_PLUGIN_DIR     plugins shipped in the image           (/opt/hostnic/bin)
#   HOSTNIC_CONFLIST       conflist to install                    (/etc/hostnic/cni/10-hostnic.conflist)
#   HOSTNIC_SOCKET         the agent's socket, asked for STATUS   (/run/hostnic/hostnic.sock)
#   HOSTNIC_STATUS_POLL    seconds between STATUS attempts        (2)
#   HOSTNIC_CNI_UNINSTALL  `true`: remove instead of install      (false)
#   CNI_BIN_DIR            host CNI binary directory              (/host/opt/cni/bin)
#   CNI_CONF_DIR           host CNI config directory              (/host/etc/cni/net.d)
set -eu

plugin_dir=${HOSTNIC_PLUGIN_DIR:-/opt/hostnic/bin}
conflist=${HOSTNIC_CONFLIST:-/etc/hostnic/cni/10-hostnic.conflist}
socket=${HOSTNIC_SOCKET:-/run/hostnic/hostnic.sock}
poll=${HOSTNIC_STATUS_POLL:-2}
uninstall=${HOSTNIC_CNI_UNINSTALL:-false}
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
conf_name=${conflist##*/}

say() { echo "hostnic-install-cni: $*" >&2; }

tmp_files=""
cleanup() {
    for f in $tmp_files; do rm -f "$f"; done
}
trap cleanup EXIT

# install_atomic SRC DIR NAME MODE: copy SRC to DIR/NAME through a temporary file and rename.
install_atomic() {
    tmp="$2/.$3.hostnic-tmp.$$"
    tmp_files="$tmp_files $tmp"
    cp "$1" "$tmp"
    chmod "$4" "$tmp"
    mv -f "$tmp" "$2/$3"
    say "installed $2/$3"
}

need() {
    for f in "$@"; do
        [ -r "$f" ] || { say "$f is missing"; exit 1; }
    done
}

# Runtimes use the lexicographically first config file: warn about any that would win.
warn_shadowing() {
    for f in "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json; do
        [ -e "$f" ] || continue
        name=${f##*/}
        if [ "$name" != "$conf_name" ] && [ "$(printf '%s\n%s\n' "$name" "$conf_name" | LC_ALL=C sort | head -n 1)" = "$name" ]; then
            say "warning: $f sorts before $conf_name, so the runtime uses it instead of hostnic"
        fi
    done
}

# agent_ready: CNI STATUS through the plugin this image ships (the same binary and socket the
# runtime uses; STATUS exists from cniVersion 1.1.0 on). Its error message goes to $status.
agent_ready() {
    status=$(printf '{"cniVersion":"1.1.0","name":"hostnic","type":"hostnic","socket":"%s"}' "$socket" |
        CNI_COMMAND=STATUS "$plugin_dir/hostnic" 2>/dev/null) && return 0
    return 1
}

# Stays running until the pod is stopped; the conflist stays too.
idle() {
    while :; do
        # Away from the container's stdout/stderr: a TERM between the fork and `sleeper=$!`
        # leaves this sleep behind, and it must not keep the log stream open.
        sleep 3600 </dev/null >/dev/null 2>&1 &
        sleeper=$!
        wait "$sleeper" || true
    done
}

case "${1:-}" in
plugins)
    need "$plugin_dir/hostnic"
    mkdir -p "$bin_dir"
    for p in loopback portmap; do
        if [ -e "$bin_dir/$p" ]; then
            say "kept the node's $bin_dir/$p"
        else
            need "$plugin_dir/$p"
            install_atomic "$plugin_dir/$p" "$bin_dir" "$p" 0755
        fi
    done
    install_atomic "$plugin_dir/hostnic" "$bin_dir" hostnic 0755
    ;;
conflist)
    # Stopping is normal at any point (a rolling update): exit 0, after the current step
    # (a rename is atomic: the conflist is either installed or not).
    sleeper=""
    trap 'kill "$sleeper" 2>/dev/null || :; exit 0' TERM INT
    if [ "$uninstall" = true ]; then
        rm -f "$conf_dir/$conf_name" "$bin_dir/hostnic"
        say "uninstalled: removed $conf_dir/$conf_name and $bin_dir/hostnic"
        idle
    fi
    need "$conflist" "$plugin_dir/hostnic"
    mkdir -p "$conf_dir"
    last=""
    until agent_ready; do
        if [ "$status" != "$last" ]; then
            say "waiting for the agent to be ready: ${status:-no answer}"
            last=$status
        fi
        sleep "$poll"
    done
    warn_shadowing
    install_atomic "$conflist" "$conf_dir" "$conf_name" 0644
    idle
    ;;
*)
    say "usage: hostnic-install-cni plugins|conflist"
    exit 2
    ;;
esac
