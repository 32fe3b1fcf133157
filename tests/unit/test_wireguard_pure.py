"""WireGuard's pure part: X25519 against RFC 7748's vectors, key clamping, the addresses derived
from the node subnets, the device's peers."""
import base64
from ipaddress import IPv4Address

from ovs_mesh.encryption.wireguard import WgPeer, address, clamp, new_private_key, peers, public_key, x25519
from tests.helpers import base_config, base_config_v6
from topology.config import parse_config


def test_rfc7748_vectors():
    # RFC 7748 section 6.1: Alice's key pair
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    assert x25519(alice, (9).to_bytes(32, "little")).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    # section 5.2, first vector
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    assert x25519(k, u).hex() == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"


def test_public_key_of_a_base64_private_key():
    alice = base64.b64encode(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    assert public_key(alice.decode()) == base64.b64encode(
        bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")).decode()


def test_new_keys_are_clamped():
    key = base64.b64decode(new_private_key(b"\xff" * 32))
    assert key[0] & 7 == 0 and key[31] & 128 == 0 and key[31] & 64 and clamp(key) == key


def test_addresses_follow_the_subnet_number():
    c = parse_config(base_config(3))
    got = {n.name: address(c.cluster, n) for n in c.nodes}
    assert got == {"node-1": IPv4Address("100.64.0.2"), "node-2": IPv4Address("100.64.0.3"),
                   "node-3": IPv4Address("100.64.0.4")}
    v6 = parse_config(base_config_v6(3, family="ipv6"))
    assert address(v6.cluster, v6.nodes[0]) == IPv4Address("100.64.0.2")


def test_peers_need_a_public_key():
    data = base_config(3, wireguard_port=51000)
    key = public_key(new_private_key(b"\x01" * 32))
    data["nodes"][1]["wireguard_public_key"] = key
    c = parse_config(data)
    assert peers(c.cluster, list(c.nodes[1:])) == (WgPeer(key, "192.168.56.12:51000", "100.64.0.3/32"),)
