#!/usr/bin/env bash
# Provision one ovs-mesh node: the steps every Vagrant VM runs, and that
# tests/vagrant runs unchanged inside namespace-lab nodes (with paths pointing
# into the lab directory).  It only calls the product's own commands:
#   1. install Open vSwitch, the CNI plugins and ovs-mesh       (OVS_MESH_INSTALL):
#      apt packages not yet installed, then ovs-mesh into a venv, either from the synced repo and
#      PyPI (apt) or from a wheelhouse with `pip --no-index` (wheels: air-gapped, nothing compiled)
#   2. `ovs-mesh lab topology`: the same topology on every node, generated from
#      the node list; then this node's config (topology + local section)
#   3. `ovs-mesh validate`, then run it: systemd unit via `ovs-mesh install-service`,
#      or `ovs-mesh apply` once, or `ovs-mesh agent` in the background (OVS_MESH_RUN)
# Parameters (environment; defaults are the VM's):
#   OVS_MESH_NODES      "NAME=IP NAME=IP ..."      every node of the mesh, in order (required)
#   OVS_MESH_NODE       this node's name           (default: hostname)
#   OVS_MESH_TUNNEL     vxlan | gre | geneve       (default vxlan)
#   OVS_MESH_MODE       flow | port | stp          (default flow)
#   OVS_MESH_CIDR       pod range                  (default: ovs-mesh's)
#   OVS_MESH_TOPOLOGY   shared topology file       (default /etc/ovs-mesh/topology.yaml)
#   OVS_MESH_CONFIG     this node's config         (default /etc/ovs-mesh/config.yaml)
#   OVS_MESH_OVSDB      OVSDB remote               (default unix:/var/run/openvswitch/db.sock)
#   OVS_MESH_DATAPATH   system | netdev | dummy    (default system)
#   OVS_MESH_UNDERLAY_BRIDGE, OVS_MESH_UNDERLAY_INTERFACE   netdev datapath only
#   OVS_MESH_CNI_CONF   CNI conflist path          (default /etc/cni/net.d/10-ovs-mesh.conflist)
#   OVS_MESH_INSTALL    apt | wheels | none        (default apt: apt packages + venv from OVS_MESH_SRC)
#   OVS_MESH_SRC        the repository             (default /ovs-mesh, the synced folder)
#   OVS_MESH_WHEELS     the wheelhouse             (default /opt/ovs-mesh/wheels, the synced folder)
#   OVS_MESH_VENV       virtualenv for ovs-mesh    (default /opt/ovs-mesh/venv)
#   OVS_MESH_BIN        the ovs-mesh executable    (default $OVS_MESH_VENV/bin/ovs-mesh)
#   OVS_MESH_RUN        systemd | apply | agent | none   (default systemd)
#   OVS_MESH_AGENT_PIDFILE, OVS_MESH_AGENT_LOG     agent mode only
#   OVS_MESH_CONVERGE_TIMEOUT  seconds to wait for `plan` to report no changes (default 600)
set -euo pipefail

log() { echo "ovs-mesh provision${NODE:+ [$NODE]}: $*"; }
die() { echo "ovs-mesh provision: error: $*" >&2; exit 2; }

NODES=${OVS_MESH_NODES:-}
NODE=${OVS_MESH_NODE:-$(hostname)}
TUNNEL=${OVS_MESH_TUNNEL:-vxlan}
MODE=${OVS_MESH_MODE:-flow}
CIDR=${OVS_MESH_CIDR:-}
TOPOLOGY=${OVS_MESH_TOPOLOGY:-/etc/ovs-mesh/topology.yaml}
CONFIG=${OVS_MESH_CONFIG:-/etc/ovs-mesh/config.yaml}
OVSDB=${OVS_MESH_OVSDB:-unix:/var/run/openvswitch/db.sock}
DATAPATH=${OVS_MESH_DATAPATH:-system}
UNDERLAY_BRIDGE=${OVS_MESH_UNDERLAY_BRIDGE:-}
UNDERLAY_INTERFACE=${OVS_MESH_UNDERLAY_INTERFACE:-}
CNI_CONF=${OVS_MESH_CNI_CONF:-/etc/cni/net.d/10-ovs-mesh.conflist}
INSTALL=${OVS_MESH_INSTALL:-apt}
SRC=${OVS_MESH_SRC:-/ovs-mesh}
WHEELS=${OVS_MESH_WHEELS:-/opt/ovs-mesh/wheels}
VENV=${OVS_MESH_VENV:-/opt/ovs-mesh/venv}
BIN=${OVS_MESH_BIN:-$VENV/bin/ovs-mesh}
RUN=${OVS_MESH_RUN:-systemd}

[[ -n $NODES ]] || die "OVS_MESH_NODES: empty: give every node as NAME=IP, separated by spaces"
case $INSTALL in apt|wheels|none) ;; *) die "OVS_MESH_INSTALL: $INSTALL: must be apt, wheels or none" ;; esac
case $RUN in systemd|apply|agent|none) ;; *) die "OVS_MESH_RUN: $RUN: must be systemd, apply, agent or none" ;; esac

# 1. Packages and ovs-mesh itself.
if [[ $INSTALL != none ]]; then
  missing=()
  for p in openvswitch-switch containernetworking-plugins python3-venv iproute2 iputils-ping ethtool nftables; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Enabling runs Debian's SysV sync script (seconds under emulation): only when not yet done.
  systemctl -q is-enabled openvswitch-switch.service && systemctl -q is-active openvswitch-switch.service \
    || systemctl enable --now openvswitch-switch.service
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
fi
if [[ $INSTALL == apt ]]; then
  log "installing ovs-mesh from $SRC into $VENV"
  # The pinned, hashed run-time dependencies (requirements/agent.txt), then ovs-mesh itself.
  "$VENV/bin/pip" install -q --no-deps --require-hashes -r "$SRC/requirements/agent.txt"
  "$VENV/bin/pip" install -q --no-deps "$SRC"
elif [[ $INSTALL == wheels ]]; then
  wheel=$(ls "$WHEELS"/ovs_mesh-*.whl 2>/dev/null | tail -n1)
  [[ -n $wheel ]] || die "OVS_MESH_WHEELS: $WHEELS: no ovs_mesh-*.whl (build it on the host: pip wheel)"
  stamp=$VENV/.ovs-mesh-wheel
  sum=$(sha256sum "$wheel" | cut -d' ' -f1)
  # --no-compile: byte-compiling thousands of files (the kubernetes client) is slow under emulation;
  # Python compiles what it imports, once.
  if [[ $(cat "$stamp" 2>/dev/null) != "$sum" ]]; then
    # The wheelhouse is exactly ovs-mesh and its dependencies (`pip wheel`): one pip run installs
    # them all as they are, without resolving anything (each pip start is many seconds under emulation).
    log "installing $(basename "$wheel") and its dependencies from $WHEELS into $VENV (no index)"
    deps=()
    for w in "$WHEELS"/*.whl; do [[ $w == */ovs_mesh-* ]] || deps+=("$w"); done
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --no-index --no-deps \
      --force-reinstall "$wheel" "${deps[@]}"
    echo "$sum" >"$stamp"
  fi
fi
[[ -x $BIN ]] || die "OVS_MESH_BIN: $BIN: not an executable (install ovs-mesh or set OVS_MESH_INSTALL=apt)"

# 2. The topology (identical on every node) and this node's config.
node_args=()
for spec in $NODES; do node_args+=(--node "$spec"); done
topo_args=("${node_args[@]}" --tunnel "$TUNNEL" --mode "$MODE")
[[ -z $CIDR ]] || topo_args+=(--cidr "$CIDR")
mkdir -p "$(dirname "$TOPOLOGY")" "$(dirname "$CONFIG")"
"$BIN" lab topology "${topo_args[@]}" -o "$TOPOLOGY"
local_args=(--local "$NODE" --local-set "ovsdb=$OVSDB" --local-set "datapath=$DATAPATH"
            --local-set host=true --local-set "cni_conf=$CNI_CONF")
[[ -z $UNDERLAY_BRIDGE ]] || local_args+=(--local-set "underlay_bridge=$UNDERLAY_BRIDGE")
[[ -z $UNDERLAY_INTERFACE ]] || local_args+=(--local-set "underlay_interface=$UNDERLAY_INTERFACE")
"$BIN" lab topology "${topo_args[@]}" "${local_args[@]}" -o "$CONFIG"
"$BIN" --config "$CONFIG" validate
log "topology $TOPOLOGY ($(sha256sum "$TOPOLOGY" | cut -c1-12)), config $CONFIG: $TUNNEL, $MODE mode"

# 3. Run it.
case $RUN in
  systemd)
    installed=$("$BIN" install-service --exec "$BIN")   # keeps the config written above
    echo "$installed"
    if grep -q '^unchanged .*ovs-mesh.service' <<<"$installed" && systemctl is-active -q ovs-mesh.service; then
      # Same unit, agent running (a re-provision, e.g. another tunnel type): the agent re-reads
      # the config file by itself; reload (SIGHUP) only makes it converge now. No restart.
      systemctl reload ovs-mesh.service
      log "ovs-mesh.service: reloaded ($(systemctl is-active ovs-mesh.service))"
    else
      systemctl restart ovs-mesh.service   # the agent converges at start; restarts keep traffic
      log "ovs-mesh.service: $(systemctl is-active ovs-mesh.service)"
    fi
    ;;
  apply)
    "$BIN" --config "$CONFIG" apply
    ;;
  agent)
    pidfile=${OVS_MESH_AGENT_PIDFILE:-/run/ovs-mesh-agent.pid}
    logfile=${OVS_MESH_AGENT_LOG:-/var/log/ovs-mesh-agent.log}
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "agent already running (pid $(cat "$pidfile")): it re-reads $CONFIG by itself"
    else
      nohup "$BIN" --config "$CONFIG" agent </dev/null >>"$logfile" 2>&1 &
      echo $! >"$pidfile"
      log "agent started (pid $!, log $logfile)"
    fi
    ;;
  none) ;;
esac

# Converged when `plan` has nothing left to change. Each ovs-mesh command is a Python start (seconds
# under software emulation), so first wait, without Python, for the agent's status file to show a
# reconcile newer than the config and without problems; then one `plan` normally confirms it.
# A deadline, not a count.
if [[ $RUN != none ]]; then
  wait_s=${OVS_MESH_CONVERGE_TIMEOUT:-600}
  deadline=$((SECONDS + wait_s))
  status_file=$(dirname "${OVSDB#unix:}")/ovs-mesh.status.json   # the agent's rundir: the OVSDB socket's
  written=$(stat -c %Y "$CONFIG")
  reconciled() {
    local t
    t=$(sed -n 's/.*"time": \([0-9]*\).*/\1/p' "$status_file" 2>/dev/null)
    [[ -n $t ]] && ((t >= written)) && grep -q '"problems": \[\]' "$status_file"
  }
  if [[ $RUN != apply && $OVSDB == unix:* ]]; then
    quick=$((SECONDS + wait_s / 2))   # a problem that persists (a peer not up yet): on to `plan`
    until reconciled || ((SECONDS >= quick)); do sleep 0.5; done
  fi
  while ((SECONDS < deadline)); do
    if out=$("$BIN" --config "$CONFIG" plan 2>/dev/null) && grep -q 'no changes' <<<"$out"; then
      log "converged: $(head -n1 <<<"$out")"
      exit 0
    fi
    sleep 1
  done
  die "not converged after ${wait_s}s: see '$BIN --config $CONFIG plan' and the agent's log"
fi
