# Runs inside the box's root filesystem (chroot) at the end of mmdebstrap: users, ssh, network.
set -eu
# The vagrant user: passwordless sudo, Vagrant's insecure key (replaced at the first `vagrant up`).
useradd --create-home --shell /bin/bash vagrant
echo vagrant:vagrant | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
printf 'UseDNS no\n' >/etc/ssh/sshd_config.d/vagrant.conf
# Every VM gets its own ssh host key and machine id at its first boot. One ed25519 key: under
# software emulation `ssh-keygen -A` (RSA 3072 too) delays the first ssh login by minutes.
rm -f /etc/ssh/ssh_host_*
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\n' >>/etc/ssh/sshd_config.d/vagrant.conf
cat >/etc/systemd/system/ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate the ssh host key at first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-host-keys.service ssh.service systemd-networkd.service
# Periodic maintenance a throw-away lab VM does not need, and that competes for the emulated CPU.
for unit in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer fstrim.timer \
            dpkg-db-backup.timer; do
  systemctl mask "$unit"
done
# Under software emulation on a busy host a unit's start can take minutes (measured: networkd, logind,
# ovsdb-server each over systemd's default 90 s, then failed and restarted, and ssh, ordered after
# network.target, waited): allow 10 minutes. Open vSwitch's database exists already (ovs-ctl would
# create it at the first boot).
mkdir -p /etc/systemd/system.conf.d
printf '[Manager]\nDefaultTimeoutStartSec=600s\n' >/etc/systemd/system.conf.d/slow-start.conf
# Installed but off until cluster.encryption asks for IPsec: the IPsec monitor (a Python daemon)
# and strongSwan's charon would otherwise run on every VM for nothing.
systemctl disable openvswitch-ipsec.service strongswan-starter.service
mkdir -p /var/lib/openvswitch   # Debian: /etc/openvswitch/conf.db links there
[ -e /etc/openvswitch/conf.db ] || ovsdb-tool create /etc/openvswitch/conf.db /usr/share/openvswitch/vswitch.ovsschema
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
# Network: DHCP on the first NIC (Vagrant's management network); Vagrant writes the others.
cat >/etc/systemd/network/10-eth0.network <<'NET'
[Match]
Name=eth0
[Network]
DHCP=ipv4
NET
mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d
printf '[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30\n' \
  >/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf
echo bookworm >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 bookworm\n' >/etc/hosts
printf 'LABEL=ovs-root / ext4 defaults,errors=remount-ro 0 1\n' >/etc/fstab
# ovs-mesh's virtualenv (pip, byte-compiled here at native speed; under emulation `python3 -m venv`
# takes minutes). provision.sh installs ovs-mesh into it from the wheelhouse or PyPI.
python3 -m venv /opt/ovs-mesh/venv
apt-get clean
rm -rf /var/lib/apt/lists/*
