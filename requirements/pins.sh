# Pinned installs, sourced by ./run (bash; run from the repository root, as root).
#
# Every Python package the README's commands install comes from a lock compiled by pip-tools and
# kept in this directory, each pinned to one version and checked against its sha256:
#   agent.txt   what ovs-mesh needs at run time (setup.cfg's install_requires): the wheelhouse
#               for the VMs, air-gapped nodes and the image
#   test.txt    the same pins plus the test extras: ./run's virtualenv
#   tools.txt   pip-tools itself, for `./run lock`
# setup.cfg keeps compatible ranges for people who install ovs-mesh into their own environments;
# constraints.in holds what the lock must satisfy beyond them.  tests/unit/test_lock.py fails when
# a lock no longer matches setup.cfg or the virtualenv no longer matches the lock.
#
# python-ovs (the `ovs` package) is published as source only.  Its optional C JSON parser,
# ovs._json, makes OVSDB's JSON-RPC parsing several times faster and needs libopenvswitch, which
# Debian 12 does not ship as a library: it ships the source (openvswitch-source).  ovs_json_lib
# builds the static library from that source once (about two minutes) and caches it with its
# headers; ovs_wheel compiles python-ovs, from its hashed sdist, against it.

shopt -s inherit_errexit
CACHE=${OVS_MESH_CACHE:-/var/cache/ovs-mesh}
# What the python-ovs C extension is built with (Debian packages).
BUILD_PACKAGES=(openvswitch-source gcc make libc6-dev python3-dev)

pins_die() { echo "error: $*" >&2; exit 1; }

# A lock without python-ovs's entry (installed from the wheel ovs_wheel built), on stdout.
lock_without_ovs() {
  awk 'BEGIN { skip = 0 }
       /^[^ #]/ { skip = ($0 ~ /^ovs==/) }
       !skip' "$1"
}

# python-ovs's entry of a lock (name==version and its hashes), on stdout.
lock_ovs_entry() {
  awk 'BEGIN { keep = 0 }
       /^[^ #]/ { keep = ($0 ~ /^ovs==/) }
       keep && !/^ *#/' "$1"
}

# libopenvswitch.a and its public headers, built from Debian's openvswitch-source; prints the dir.
ovs_json_lib() {
  local ver dir build bs
  ver=$(dpkg-query -W -f='${Version}' openvswitch-source) || pins_die "openvswitch-source is not installed"
  dir=$CACHE/openvswitch-$ver
  if [[ ! -f $dir/lib/libopenvswitch.a ]]; then
    echo "building libopenvswitch $ver from Debian's openvswitch-source (for python-ovs's C JSON parser)" >&2
    build=$(mktemp -d /tmp/ovs-mesh-ovslib.XXXXXX)
    tar xzf /usr/src/openvswitch/openvswitch.tar.gz -C "$build"
    (
      cd "$build"/openvswitch
      # -fPIC: the archive is linked into a shared Python extension.  Nothing optional is needed
      # by the JSON parser, so nothing optional is probed for.
      ./configure -q CFLAGS="-O2 -fPIC" --disable-ssl --disable-libcapng --disable-afxdp \
        --without-dpdk >"$build/configure.log" 2>&1 \
        || { tail -n 20 "$build/configure.log" >&2; exit 1; }
      # The generated headers first: the library's objects include them.
      bs=$(make -s -f Makefile -f - print-built-sources <<<$'print-built-sources:\n\t@echo $(BUILT_SOURCES)')
      # shellcheck disable=SC2086
      { make -s -j"$(nproc)" $bs && make -s -j"$(nproc)" lib/libopenvswitch.la; } >"$build/make.log" 2>&1 \
        || { tail -n 20 "$build/make.log" >&2; exit 1; }
      mkdir -p "$dir.tmp/lib"
      cp -r include "$dir.tmp/"
      cp lib/.libs/libopenvswitch.a "$dir.tmp/lib/"
    ) || { rm -rf "$build" "$dir.tmp"; pins_die "building libopenvswitch failed"; }
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    rm -rf "$build"
  fi
  echo "$dir"
}

# The python-ovs wheel with its C extension, built with PYTHON from the hashed sdist in LOCK,
# cached by the sdist's hashes, the library's version and the Python; prints the wheel's path.
ovs_wheel() {
  local python=$1 lock=$2 lib entry key dir wheel
  lib=$(ovs_json_lib) || exit 1
  entry=$(lock_ovs_entry "$lock")
  [[ -n $entry ]] || pins_die "$lock: no ovs== entry"
  key=$( { echo "$entry"; basename "$lib"; "$python" -c 'import platform, sys; print(sys.implementation.cache_tag, platform.machine())'; } \
        | sha256sum | cut -c1-16)
  dir=$CACHE/wheels/ovs-$key
  wheel=$(ls "$dir"/ovs-*.whl 2>/dev/null | head -n1)
  if [[ -z $wheel ]]; then
    echo "compiling python-ovs with its C JSON parser" >&2
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    # --no-cache-dir: pip's wheel cache does not know the build environment, and could hand back
    # a wheel built without the library (python-ovs silently falls back to pure Python).
    enable_shared=no extra_cflags="-I$lib/include" extra_libs="$lib/lib/libopenvswitch.a -lm -lpthread -lrt" \
      "$python" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps --no-build-isolation \
      --require-hashes -w "$dir.tmp" -r <(echo "$entry") >&2 || pins_die "building the python-ovs wheel failed"
    wheel=$(ls "$dir.tmp"/ovs-*.whl | head -n1)
    "$python" -m zipfile -l "$wheel" | grep -q 'ovs/_json\.' \
      || pins_die "python-ovs was built without its C extension (ovs._json): see the build output above"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    wheel=$(ls "$dir"/ovs-*.whl | head -n1)
  fi
  echo "$wheel"
}

# Make the virtualenv in VENV hold exactly the packages of LOCK (and ovs-mesh, editable).
sync_venv() {
  local venv=$1 lock=$2 stamp key wheel
  key=$(cat "$lock" setup.cfg pyproject.toml requirements/pins.sh | sha256sum | cut -c1-16)
  stamp=$venv/.installed-$key
  [[ -x $venv/bin/python && -f $stamp ]] && return 0
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  local pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
  "${pip[@]}" install --no-deps --require-hashes -r <(lock_without_ovs "$lock")
  wheel=$(ovs_wheel "$venv/bin/python" "$lock") || exit 1
  "${pip[@]}" install --no-deps --force-reinstall "$wheel"
  "${pip[@]}" install --no-deps --no-build-isolation -e .
  # Packages an older lock installed and this one does not name: removed, as pip-sync would.
  "$venv/bin/python" - "$lock" <<'EOF'
import re, subprocess, sys
from importlib import metadata
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = {norm(l.split("==")[0]) for l in open(sys.argv[1]) if re.match(r"^[A-Za-z0-9]", l)}
keep = locked | {"pip", "ovs-mesh"}
extra = sorted({norm(d.metadata["Name"]) for d in metadata.distributions()} - keep)
if extra:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
EOF
  "$venv/bin/python" -c 'import ovs._json' || pins_die "$venv: python-ovs has no C extension"
  rm -f "$venv"/.installed-*
  touch "$stamp"
}

# The wheelhouse: ovs-mesh and exactly the pinned run-time dependencies, into DIR, built with
# PYTHON (default: ./run's virtualenv).
build_wheels() {
  local dir=$1 python=${2:-.venv/bin/python}
  mkdir -p "$dir"
  local pip=("$python" -m pip -q --disable-pip-version-check)
  "${pip[@]}" wheel --no-deps --require-hashes -w "$dir" -r <(lock_without_ovs requirements/agent.txt)
  local wheel
  wheel=$(ovs_wheel "$python" requirements/agent.txt) || exit 1
  cp "$wheel" "$dir"/
  "${pip[@]}" wheel --no-deps --no-build-isolation -w "$dir" .
  echo "wheelhouse: $dir ($(ls "$dir" | wc -l) wheels)"
}

# Compile the locks again from setup.cfg (and constraints.in).  Pins that still satisfy setup.cfg
# are kept; `--upgrade` moves every pin to the newest release that does.
update_locks() {
  local tools upgrade=()
  [[ ${1:-} == --upgrade ]] && upgrade=(--upgrade)
  tools=$(mktemp -d /tmp/ovs-mesh-lock.XXXXXX)
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip -q --disable-pip-version-check install --no-deps --require-hashes -r requirements/tools.txt
  local compile=("$tools/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links
                 --no-emit-index-url --no-emit-trusted-host "${upgrade[@]}")
  "${compile[@]}" -c requirements/constraints.in -o requirements/agent.txt setup.cfg
  "${compile[@]}" --extra test -c requirements/agent.txt -o requirements/test.txt setup.cfg
  "${compile[@]}" -o requirements/tools.txt requirements/tools.in
  rm -rf "$tools"
  echo "locks written: requirements/agent.txt requirements/test.txt (review with git diff, then ./run test)"
}
