#!/usr/bin/env bash
# Provisions the Slipway base image (run by Packer as root on Amazon Linux
# 2023): the slipway user apps run as, slipway-agent from the release
# bucket checked by sha256, journald kept bounded, the CloudWatch agent
# shipping the journal's app and agent lines to /slipway/<app>/<env>, and
# no SSH daemon (Session Manager is the way in).
set -euo pipefail

: "${SLIPWAY_BUCKET:?the release bucket}"
arch="$(uname -m)"
case "$arch" in
  x86_64) want="${AGENT_SHA256_X86_64:?}" ;;
  aarch64) want="${AGENT_SHA256_AARCH64:?}" ;;
  *) echo "no slipway-agent for $arch" >&2; exit 1 ;;
esac

# rsyslog-gnutls: the TLS driver an environment's `syslog` forwarding uses.
dnf install -y -q amazon-cloudwatch-agent amazon-ssm-agent rsyslog rsyslog-gnutls

# The user app processes run as (the agent's systemd units say User=slipway),
# with a home of its own: the agent's root /srv/slipway is root's, so the app
# cannot swap what the agent, as root, opens there.
id slipway >/dev/null 2>&1 || useradd --system --create-home --home-dir /home/slipway slipway
install -d -o slipway -g slipway -m 0700 /home/slipway
install -d -o root -g root -m 0755 /srv/slipway

# The agent, verified before it is installed.
tmp="$(mktemp)"
aws s3 cp "s3://$SLIPWAY_BUCKET/_slipway/agent/$arch/slipway-agent" "$tmp"
echo "$want  $tmp" | sha256sum --check --status
install -m 0755 "$tmp" /usr/local/bin/slipway-agent
rm -f "$tmp"

# journald: persistent, bounded; app processes log as <app>/<type>.<n>.
mkdir -p /etc/systemd/journald.conf.d
cat > /etc/systemd/journald.conf.d/slipway.conf <<'CONF'
[Journal]
Storage=persistent
SystemMaxUse=1G
RateLimitIntervalSec=0
CONF

# Logs: rsyslog reads the journal and writes /var/log/slipway/journal.log
# (see rsyslog-slipway.conf for why), which the CloudWatch agent ships.
install -d -m 0755 /var/log/slipway /etc/slipway
install -m 0644 /tmp/rsyslog-slipway.conf /etc/rsyslog.d/10-slipway.conf
# The agent writes /etc/rsyslog.d/05-slipway-forward-<app>.conf when the
# environment has a `syslog` destination (checked with rsyslogd -N1 first).
# The CloudWatch agent's settings, with @APP@ and @ENV@ filled in at boot by
# user data, which knows the app and environment.
install -m 0644 /tmp/cloudwatch-agent.json /etc/slipway/cloudwatch-agent.json
systemctl enable rsyslog amazon-cloudwatch-agent amazon-ssm-agent

# No SSH daemon at boot: Session Manager opens shells. (Packer itself is
# connected over SSH through Session Manager now, so the running daemon is
# left alone until the image is taken.)
systemctl disable sshd.service
systemctl mask sshd.service

dnf clean all
