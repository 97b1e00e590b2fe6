# The Slipway base image: Amazon Linux 2023 with slipway-agent, journald
# and log shipping configured, the CloudWatch agent, and no SSH daemon
# (Session Manager is the way in). One AMI per architecture.
#
#   make image BUCKET=<release bucket>     # runs `packer build` for both
#
# The agent binaries come from the bucket (make publish-agent), checked
# against the sha256 given here.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "bucket" {
  type        = string
  description = "The release bucket holding _slipway/agent/<arch>/slipway-agent."
}

variable "agent_sha256_x86_64" {
  type = string
}

variable "agent_sha256_aarch64" {
  type = string
}

locals {
  stamp = formatdate("YYYYMMDDhhmmss", timestamp())
  builds = {
    x86_64  = { instance_type = "t3.small", ami_arch = "x86_64", sha256 = var.agent_sha256_x86_64 }
    aarch64 = { instance_type = "t4g.small", ami_arch = "arm64", sha256 = var.agent_sha256_aarch64 }
  }
}

source "amazon-ebs" "al2023" {
  region               = var.region
  ssh_username         = "ec2-user"
  communicator         = "ssh"
  ssh_interface        = "session_manager"
  iam_instance_profile = "SlipwayImageBuilder"
  encrypt_boot         = true
  imds_support         = "v2.0"
  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }
}

build {
  dynamic "source" {
    for_each = local.builds
    labels   = ["amazon-ebs.al2023"]
    content {
      name          = source.key
      ami_name      = "slipway-${source.key}-${local.stamp}"
      instance_type = source.value.instance_type
      source_ami_filter {
        owners      = ["amazon"]
        most_recent = true
        filters = {
          name         = "al2023-ami-2023.*-kernel-*-${source.value.ami_arch}"
          architecture = source.value.ami_arch
        }
      }
      tags = {
        "slipway:image" = "base"
        "slipway:arch"  = source.key
      }
    }
  }

  # What provision.sh installs: the CloudWatch agent's settings (rendered
  # for the app and environment at boot) and rsyslog's journal forwarding.
  provisioner "file" {
    sources     = ["${path.root}/cloudwatch-agent.json", "${path.root}/rsyslog-slipway.conf"]
    destination = "/tmp/"
  }

  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "sudo env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = [
      "SLIPWAY_BUCKET=${var.bucket}",
      "AGENT_SHA256_X86_64=${var.agent_sha256_x86_64}",
      "AGENT_SHA256_AARCH64=${var.agent_sha256_aarch64}",
    ]
  }
}
