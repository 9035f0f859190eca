#!/bin/sh
# Installs the hostnic CNI plugin binary and its conflist on the node; the agent DaemonSet runs
# it as an init container with the host's CNI directories mounted.
#
# Both files are written to a temporary name in the target directory and then renamed over
# the old one: rename(2) is atomic, so the runtime never reads a half-written conflist or
# executes a half-copied plugin, and a plugin binary that is running is not "text file busy".
#
# Environment (defaults are the DaemonSet's mount points):
#   HOSTNIC_PLUGIN    plugin binary to install      (/opt/hostnic/bin/hostnic)
#   HOSTNIC_CONFLIST  conflist to install           (/etc/hostnic/cni/10-hostnic.conflist)
#   CNI_BIN_DIR       host CNI binary directory     (/host/opt/cni/bin)
#   CNI_CONF_DIR      host CNI config directory     (/host/etc/cni/net.d)
set -eu

plugin=${HOSTNIC_PLUGIN:-/opt/hostnic/bin/hostnic}
conflist=${HOSTNIC_CONFLIST:-/etc/hostnic/cni/10-hostnic.conflist}
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
conf_name=$(basename "$conflist")

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
    echo "installed $2/$3"
}

for f in "$plugin" "$conflist"; do
    [ -r "$f" ] || { echo "hostnic-install-cni: $f is missing" >&2; exit 1; }
done
mkdir -p "$bin_dir" "$conf_dir"

# The plugin first: a conflist naming a plugin that is not there fails every pod.
install_atomic "$plugin" "$bin_dir" hostnic 0755
install_atomic "$conflist" "$conf_dir" "$conf_name" 0644

# Runtimes use the lexicographically first config file: warn about any that would win.
for f in "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json; do
    [ -e "$f" ] || continue
    name=$(basename "$f")
    if [ "$name" != "$conf_name" ] && [ "$(printf '%s\n%s\n' "$name" "$conf_name" | LC_ALL=C sort | head -n 1)" = "$name" ]; then
        echo "hostnic-install-cni: warning: $f sorts before $conf_name, so the runtime uses it instead of hostnic" >&2
    fi
done
