"""cluster.encryption and its credentials: every rejected input names its field and value and
exits 2; a PSK never appears in a message; the MTU arithmetic of ESP and WireGuard."""
import os

import pytest

from ovs_mesh.cli.main import main
from ovs_mesh.config.file import load_config
from tests.helpers import base_config, base_config_v6, write_config
from topology.config import ConfigError, parse_config
from topology.model import ESP_OVERHEAD, WIREGUARD_OVERHEAD, Cluster

PSK = "s3cret-psk-never-shown-0123456789"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
WG_KEY = "mG0bTE1iOwo1l4tQkR0V5vIaYp6zdkG7l2bXQyQpW1c="


def kernel(data: dict) -> dict:
    data["local"]["datapath"] = "system"
    return data


def write(tmp_path, name: str, text: str, mode: int = 0o600) -> str:
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def ipsec_config(tmp_path, auth: str = "certificate", **local) -> dict:
    data = kernel(base_config(encryption="ipsec", ipsec_auth=auth))
    if auth == "certificate":
        data["local"].update(certificate=write(tmp_path, "node.crt", PEM_CERT, 0o644),
                             private_key=write(tmp_path, "node.key", PEM_KEY),
                             ca_cert=write(tmp_path, "ca.crt", PEM_CERT, 0o644))
    else:
        data["local"]["psk_file"] = write(tmp_path, "psk", PSK + "\n")
    data["local"].update(local)
    return data


def problems(tmp_path, data: dict) -> list[str]:
    """What `load_config` (the parse and the credential files) refuses, as printed."""
    path = write_config(str(tmp_path / "config.yaml"), data)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return [str(p) for p in e.value.errors]


def validate_exit(tmp_path, data: dict, capsys) -> tuple[int, str]:
    path = write_config(str(tmp_path / "config.yaml"), data)
    code = main(["--config", path, "validate"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_valid_modes_parse(tmp_path):
    c = load_config(write_config(str(tmp_path / "c.yaml"), ipsec_config(tmp_path)))
    assert c.cluster.encryption == "ipsec" and c.cluster.ipsec_auth == "certificate" and c.local.psk is None
    c = load_config(write_config(str(tmp_path / "c.yaml"), ipsec_config(tmp_path, "psk")))
    assert c.local.psk == PSK and PSK not in repr(c)
    data = base_config()
    data["nodes"][1]["wireguard_public_key"] = WG_KEY
    c = parse_config(data)
    assert c.nodes[1].wireguard_key == WG_KEY and c.nodes[0].wireguard_key is None
    assert c.cluster.encryption == "none"


def test_wireguard_parses_on_the_kernel_datapath(tmp_path):
    data = kernel(base_config(encryption="wireguard"))
    data["nodes"][1]["wireguard_public_key"] = WG_KEY
    c = parse_config(data)
    assert c.cluster.encryption == "wireguard" and c.nodes[1].wireguard_key == WG_KEY


# (description, config change, expected: field, value, reason) -- pure rules of the parse
PURE = [
    ("unknown mode", lambda d: d["cluster"].update(encryption="tls"),
     "cluster.encryption: tls: must be one of none, ipsec, wireguard"),
    ("unknown auth", lambda d: d["cluster"].update(encryption="ipsec", ipsec_auth="rsa"),
     "cluster.ipsec_auth: rsa: must be one of certificate, psk"),
    ("ipsec on the userspace datapath", lambda d: d["cluster"].update(encryption="ipsec", ipsec_auth="psk")
     or d["local"].update(datapath="netdev", psk_file="/x"),
     "cluster.encryption: ipsec: needs the kernel datapath (local.datapath system): XFRM works on the kernel's "
     "packets, local.datapath is netdev"),
    ("wireguard on the dummy datapath", lambda d: d["cluster"].update(encryption="wireguard")
     or d["local"].update(datapath="dummy"),
     "cluster.encryption: wireguard: needs the kernel datapath (local.datapath system): WireGuard works on the "
     "kernel's packets, local.datapath is dummy"),
    ("certificate missing", lambda d: d["cluster"].update(encryption="ipsec") or d["local"].update(datapath="system"),
     "local.certificate: null: required with cluster.encryption ipsec (cluster.ipsec_auth certificate)"),
    ("psk file missing", lambda d: d["cluster"].update(encryption="ipsec", ipsec_auth="psk")
     or d["local"].update(datapath="system"),
     "local.psk_file: null: required with cluster.ipsec_auth psk"),
    ("psk file with certificates", lambda d: d["cluster"].update(encryption="ipsec")
     or d["local"].update(datapath="system", certificate="/a", private_key="/b", ca_cert="/c", psk_file="/p"),
     "local.psk_file: /p: not used with cluster.ipsec_auth certificate (a pre-shared key is opt-in: "
     "cluster.ipsec_auth psk)"),
    ("certificate with psk", lambda d: d["cluster"].update(encryption="ipsec", ipsec_auth="psk")
     or d["local"].update(datapath="system", certificate="/a", psk_file="/p"),
     "local.certificate: /a: not used with cluster.ipsec_auth psk (OVS takes one method for all tunnels)"),
    ("ipsec with another vxlan port", lambda d: d["cluster"].update(encryption="ipsec", ipsec_auth="psk",
                                                                     vxlan_port=8472)
     or d["local"].update(datapath="system", psk_file="/p"),
     "cluster.vxlan_port: 8472: cluster.encryption ipsec protects VXLAN on udp/4789 only (ovs-monitor-ipsec's "
     "connections name that port)"),
    ("sa lifetime too short", lambda d: d["cluster"].update(ipsec_sa_lifetime=30),
     "cluster.ipsec_sa_lifetime: 30: at least 60 (or 0: strongSwan's defaults): an IKE exchange under load takes "
     "seconds"),
    ("sa lifetime not a number", lambda d: d["cluster"].update(ipsec_sa_lifetime="1h"),
     "cluster.ipsec_sa_lifetime: 1h: must be an integer"),
    ("sa lifetime too long", lambda d: d["cluster"].update(ipsec_sa_lifetime=86401),
     "cluster.ipsec_sa_lifetime: 86401: must be between 0 and 86400"),
    ("wireguard port", lambda d: d["cluster"].update(wireguard_port=0),
     "cluster.wireguard_port: 0: must be between 1 and 65535"),
    ("wireguard cidr IPv6", lambda d: d["cluster"].update(wireguard_cidr="fd00::/64"),
     "cluster.wireguard_cidr: fd00::/64: must be an IPv4 CIDR (the WireGuard devices' addresses)"),
    ("wireguard cidr overlaps pods", lambda d: d["cluster"].update(wireguard_cidr="10.244.128.0/20"),
     "cluster.wireguard_cidr: 10.244.128.0/20: overlaps cluster.cidr 10.244.0.0/16"),
    ("wireguard cidr too small", lambda d: d["cluster"].update(encryption="wireguard", wireguard_cidr="100.64.0.0/28")
     or d["local"].update(datapath="system"),
     "cluster.wireguard_cidr: 100.64.0.0/28: too small: the pod range holds 256 node subnets, each node needs an "
     "address here (/23 or larger)"),
    ("node ip in wireguard cidr", lambda d: d["cluster"].update(encryption="wireguard", wireguard_cidr="192.168.0.0/16")
     or d["local"].update(datapath="system"),
     "nodes[0].ip: 192.168.56.11: inside cluster.wireguard_cidr 192.168.0.0/16"),
    ("bad public key", lambda d: d["nodes"][1].update(wireguard_public_key="not-a-key"),
     "nodes[1].wireguard_public_key: not-a-key: must be a WireGuard public key (base64 of 32 bytes, as `wg pubkey` "
     "prints it)"),
    ("short public key", lambda d: d["nodes"][1].update(wireguard_public_key="AAAA"),
     "nodes[1].wireguard_public_key: AAAA: must be a WireGuard public key (base64 of 32 bytes, as `wg pubkey` "
     "prints it)"),
]


@pytest.mark.parametrize("what, change, expected", PURE, ids=[p[0] for p in PURE])
def test_rejected_by_the_parse(what, change, expected, tmp_path, capsys):
    data = base_config()
    change(data)
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert expected in [str(p) for p in e.value.errors]
    code, out = validate_exit(tmp_path, data, capsys)
    assert code == 2 and expected in out


@pytest.mark.parametrize("section", ["cluster", "local"])
@pytest.mark.parametrize("key", ["psk", "ipsec_psk"])
def test_inline_psk_is_refused_without_showing_it(section, key, tmp_path, capsys):
    data = ipsec_config(tmp_path, "psk")
    data[section][key] = PSK
    code, out = validate_exit(tmp_path, data, capsys)
    assert code == 2
    assert f"{section}.{key}: (hidden): a pre-shared key is never written in the config" in out
    assert "local.psk_file" in out and PSK not in out


# (description, how the files go wrong, expected message)
FILES = [
    ("certificate missing", lambda t, d: d["local"].update(certificate=str(t / "nope.crt")),
     "local.certificate: {t}/nope.crt: No such file or directory"),
    ("ca is a directory", lambda t, d: d["local"].update(ca_cert=str(t)),
     "local.ca_cert: {t}: not a regular file"),
    ("certificate not PEM", lambda t, d: d["local"].update(certificate=write(t, "x.crt", "hello", 0o644)),
     "local.certificate: {t}/x.crt: not PEM: no line with -----BEGIN CERTIFICATE-----"),
    ("key readable by others", lambda t, d: os.chmod(d["local"]["private_key"], 0o644),
     "local.private_key: {t}/node.key: mode 0644: readable or writable by others than its owner (chmod 600 it)"),
    ("key readable by the group", lambda t, d: os.chmod(d["local"]["private_key"], 0o640),
     "local.private_key: {t}/node.key: mode 0640: readable or writable by others than its owner (chmod 600 it)"),
]


@pytest.mark.parametrize("what, spoil, expected", FILES, ids=[f[0] for f in FILES])
def test_certificate_files_rejected(what, spoil, expected, tmp_path, capsys):
    data = ipsec_config(tmp_path)
    spoil(tmp_path, data)
    want = expected.format(t=tmp_path)
    assert want in problems(tmp_path, data)
    code, out = validate_exit(tmp_path, data, capsys)
    assert code == 2 and want in out


PSK_FILES = [
    ("missing", lambda p: os.remove(p), "No such file or directory"),
    ("readable by others", lambda p: os.chmod(p, 0o604),
     "mode 0604: readable or writable by others than its owner (chmod 600 it)"),
    ("too short", lambda p: open(p, "w").write("short\n"), "the key is too short (at least 16 characters)"),
    ("two lines", lambda p: open(p, "w").write(PSK + "\n" + PSK + "\n"), "must hold one line (the key), it has 2"),
    ("spaces", lambda p: open(p, "w").write("a key with spaces in it\n"),
     "the key may hold printable characters only, no spaces or double quotes"),
]


@pytest.mark.parametrize("what, spoil, reason", PSK_FILES, ids=[f[0] for f in PSK_FILES])
def test_psk_file_rejected_without_showing_the_key(what, spoil, reason, tmp_path, capsys):
    data = ipsec_config(tmp_path, "psk")
    spoil(data["local"]["psk_file"])
    want = f"local.psk_file: {tmp_path}/psk: {reason}"
    assert want in problems(tmp_path, data)
    code, out = validate_exit(tmp_path, data, capsys)
    assert code == 2 and want in out and PSK not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_secret_owned_by_another_user_is_refused(tmp_path):
    data = ipsec_config(tmp_path)
    os.chown(data["local"]["private_key"], 65534, 65534)
    assert f"local.private_key: {tmp_path}/node.key: owned by uid 65534: a secret must be owned by root" \
        in problems(tmp_path, data)


def test_credentials_are_not_checked_without_encryption(tmp_path):
    data = ipsec_config(tmp_path)
    data["cluster"]["encryption"] = "none"
    os.chmod(data["local"]["private_key"], 0o644)   # not used: not an error
    assert load_config(write_config(str(tmp_path / "c.yaml"), data)).cluster.encryption == "none"


# --- MTU --------------------------------------------------------------------------------------
def test_overheads_are_the_sum_of_their_headers():
    assert ESP_OVERHEAD == 37              # SPI+seq 8, IV 8, pad len+next header 2, ICV 16, pad <= 3
    assert WIREGUARD_OVERHEAD == 60        # IPv4 20, UDP 8, WireGuard header 16, tag 16


@pytest.mark.parametrize("tunnel, family, encryption, pod_mtu", [
    ("vxlan", "ipv4", "none", 1450), ("gre", "ipv4", "none", 1458), ("geneve", "ipv6", "none", 1430),
    ("vxlan", "ipv4", "ipsec", 1413), ("gre", "ipv4", "ipsec", 1421), ("geneve", "ipv4", "ipsec", 1413),
    ("vxlan", "ipv6", "ipsec", 1393), ("gre", "ipv6", "ipsec", 1401),
    # the tunnels ride between the WireGuard devices' IPv4 addresses whatever the underlay
    ("vxlan", "ipv4", "wireguard", 1390), ("gre", "ipv4", "wireguard", 1398), ("geneve", "ipv4", "wireguard", 1390),
    ("vxlan", "ipv6", "wireguard", 1370), ("gre", "ipv6", "wireguard", 1378),
])
def test_pod_mtu_accounts_for_the_encryption(tunnel, family, encryption, pod_mtu):
    c = Cluster(tunnel=tunnel, encryption=encryption)
    assert c.pod_mtu(1500, family) == pod_mtu
    assert c.pod_mtu(9000, family) == pod_mtu + 7500


def test_esp_fits_exactly_at_the_pod_mtu():
    """A pod packet at the pod MTU, in VXLAN, in ESP (GCM, 4-byte alignment) is exactly the underlay MTU."""
    pod = Cluster(tunnel="vxlan", encryption="ipsec").pod_mtu(1500)
    inner = pod + 50 - 20                    # the tunnel packet without its outer IP header: ESP's payload
    padded = -(-(inner + 2) // 4) * 4        # + pad length, next header, aligned to 4
    assert 20 + 8 + 8 + padded + 16 == 1500


def test_wireguard_device_mtu():
    assert Cluster(encryption="wireguard").wireguard_overhead("ipv4") == 60
    assert Cluster(encryption="wireguard").wireguard_overhead("ipv6") == 80


def test_explicit_mtu_wins():
    assert Cluster(encryption="wireguard", mtu=1300).pod_mtu(1500) == 1300
    assert Cluster(encryption="ipsec", mtu=1300).pod_mtu(1500) == 1300


def test_ipv6_underlay_ipsec_config_parses(tmp_path):
    data = kernel(base_config_v6(family="dual", underlay="ipv6", encryption="ipsec", ipsec_auth="psk"))
    data["local"]["psk_file"] = write(tmp_path, "psk", PSK)
    c = load_config(write_config(str(tmp_path / "c.yaml"), data))
    assert c.cluster.pod_mtu(1500, c.underlay_family) == 1393


# --- the certificate names this node, and has not expired (read with openssl) --------------------
def real_cert(tmp_path, cn: str, san: str | None, org: bool = True) -> str:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    args = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "real.key"),
            "-out", str(tmp_path / "real.crt"), "-days", "2", "-subj", ("/O=test" if org else "") + f"/CN={cn}"]
    if san:
        args += ["-addext", f"subjectAltName=DNS:{san}"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    os.chmod(tmp_path / "real.key", 0o600)
    return str(tmp_path / "real.crt")


@pytest.mark.parametrize("cn, san, reason", [
    ("node-1/", "node-1", "its subject is the CN alone: ovs-monitor-ipsec needs another attribute in it "
                          "(e.g. /O=my cluster/CN=node-1)"),
    ("node-9", "node-9", "its CN is node-9, not this node's name node-1 (peers accept a certificate whose CN is "
                         "the node name)"),
    ("node-1", None, "no DNS subjectAltName node-1 (strongSwan matches the node name against it)"),
])
def test_certificate_must_name_this_node(cn, san, reason, tmp_path, capsys):
    crt = real_cert(tmp_path, cn.rstrip("/"), san, org=not cn.endswith("/"))
    data = ipsec_config(tmp_path, certificate=crt, private_key=str(tmp_path / "real.key"))
    want = f"local.certificate: {crt}: {reason}"
    assert want in problems(tmp_path, data)
    code, out = validate_exit(tmp_path, data, capsys)
    assert code == 2 and want in out


def test_a_good_certificate_passes_and_an_expired_one_is_named(tmp_path):
    from ovs_mesh.config.secrets import certificate_facts, identity_problems

    crt = real_cert(tmp_path, "node-1", "node-1")
    data = ipsec_config(tmp_path, certificate=crt, private_key=str(tmp_path / "real.key"))
    assert load_config(write_config(str(tmp_path / "c.yaml"), data)).cluster.encryption == "ipsec"
    facts = certificate_facts(crt)
    assert facts is not None and facts[0] == "node-1" and facts[1] == ["node-1"] and facts[3]
    expired = identity_problems(crt, "node-1", facts[2] + 1)
    assert len(expired) == 1 and str(expired[0]).startswith(f"local.certificate: {crt}: expired at ")
    assert str(expired[0]).endswith("UTC: make a new one with the same CA")
