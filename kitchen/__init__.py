"""The kitchen: real local test hosts for ChoirOS, booted from the same user-data EC2 gets.

A kitchen host is a systemd-nspawn container in its own network namespace, running real
systemd and converged by the real cloud-init from a NoCloud seed. The hosts share a "kitchen
cloud" on the machine: apt-cacher-ng (the apt mirror) and moto (S3, SSM, STS, CloudWatch).

Entry points: :mod:`kitchen.lifecycle` (up, destroy, reboot, status) and :mod:`kitchen.cloud`
(endpoint, credentials, seeding). Everything here needs root.
"""
