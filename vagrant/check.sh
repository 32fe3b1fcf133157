#!/usr/bin/env bash
# Prove the Vagrant lab works, from the host: `./check.sh [--json] [--pods-per-node K] [--keep]`.
# Creates test pods on every running VM through the CNI config ovs-mesh wrote,
# then proves pod->pod (ping, no-NAT echo, DF ping at pod MTU, 10 MB TCP) and
# node->pod connectivity across all VMs: `ovs-mesh lab remote-check`, the
# namespace lab's check with every probe sent over `ssh` (vagrant ssh-config).
# Needs on the host: vagrant, ssh, python3 with ruamel.yaml and PyYAML (the
# repo's .venv if present; otherwise a small venv is made in vagrant/.venv-check).
# Exit 0 only if every check passes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cd "$here"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ovs-mesh-check.XXXXXX")
trap 'for c in "$tmp"/cm-*; do [[ -S $c ]] && ssh -S "$c" -O exit x 2>/dev/null; done; rm -rf "$tmp"' EXIT

# The running VMs, in Vagrantfile order (node-1, node-2, ...); OVS_MESH_CHECK_NODES="node-1 node-2 ..."
# names them instead (a caller that knows them saves a `vagrant status`: seconds under emulation).
if [[ -n ${OVS_MESH_CHECK_NODES:-} ]]; then
  read -ra nodes <<<"$OVS_MESH_CHECK_NODES"
else
  mapfile -t nodes < <(vagrant status --machine-readable | awk -F, '$3 == "state" && $4 == "running" {print $2}')
fi
if ((${#nodes[@]} == 0)); then
  echo "check.sh: no running VMs: run 'vagrant up' in $here first" >&2
  exit 2
fi

# How to run a command as root on a VM; {node} is the VM's name.
via=${OVS_MESH_VIA:-}
if [[ -z $via ]]; then
  vagrant ssh-config "${nodes[@]}" >"$tmp/ssh_config"
  via="ssh -F $tmp/ssh_config -o BatchMode=yes -o ControlMaster=auto -o ControlPath=$tmp/cm-%h -o ControlPersist=60 {node} sudo"
fi

# ovs-mesh on the host: the repo's code, run by a Python that has its YAML libraries.
if [[ -x $repo/.venv/bin/python ]]; then
  py=$repo/.venv/bin/python
elif python3 -c 'import ruamel.yaml, yaml' 2>/dev/null; then
  py=python3
else
  if [[ ! -x $here/.venv-check/bin/python ]]; then
    echo "check.sh: making $here/.venv-check (ruamel.yaml, PyYAML) for the host side of the check"
    python3 -m venv "$here/.venv-check"
    "$here/.venv-check/bin/pip" install -q ruamel.yaml pyyaml
  fi
  py=$here/.venv-check/bin/python
fi

node_args=()
for n in "${nodes[@]}"; do node_args+=(--node "$n"); done
export OVS_MESH_LAB_DIR=$tmp/lab PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
"$py" -m ovs_mesh lab remote-check --name "${OVS_MESH_CHECK_NAME:-omv}" --via "$via" "${node_args[@]}" "$@"
