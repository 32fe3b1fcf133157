"""vagrant/ holds no logic the product has.

The Vagrantfile and the scripts never program OVS or the host network by hand and never write a
topology or config themselves: they call `ovs-mesh` (lab topology, validate, install-service, apply,
agent, lab remote-check), and the Vagrantfile hands provisioning to provision.sh.
"""
import os
import re

VAGRANT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "vagrant")
EXECUTABLE = ("Vagrantfile", "provision.sh", "check.sh")

# Commands and text that would mean networking or topology done outside ovs-mesh.
FORBIDDEN = [
    r"\bovs-vsctl\b", r"\bovs-ofctl\b", r"\bovs-appctl\b", r"\bovsdb-client\b",
    r"\bip\s.*\b(link|addr|address|route|netns)\b", r"\bbrctl\b", r"\bsysctl\b", r"\bnft\b",
    r"\biptables\b", r"\bethtool\s+-K\b", r"\bsubnet\s*:", r"^\s*cluster\s*:", r"^\s*nodes\s*:",
    r"10\.244\.", r"\bcniVersion\b", r"\bhost-local\b",
]


def code_lines(name):
    with open(os.path.join(VAGRANT_DIR, name), encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            code = line.split("#", 1)[0]  # comments may explain; code may not do
            if code.strip():
                yield number, code


def test_no_hand_written_networking_or_topology():
    hits = [f"vagrant/{name}:{n}: {code.strip()}" for name in EXECUTABLE for n, code in code_lines(name)
            if any(re.search(p, code) for p in FORBIDDEN)]
    assert not hits, "\n".join(hits)


def test_the_product_commands_do_the_work():
    provision = "".join(code for _, code in code_lines("provision.sh"))
    for command in ("lab topology", "validate", "install-service", "apply", "agent", "plan"):
        assert command in provision, command
    assert '"$BIN" lab topology' in provision
    vagrantfile = "".join(code for _, code in code_lines("Vagrantfile"))
    assert 'path: "provision.sh"' in vagrantfile
    assert "lab remote-check" in "".join(code for _, code in code_lines("check.sh"))
