"""A kitchen host's EC2 instance record in the kitchen cloud.

On AWS a host is an instance: EC2 knows its id, state and status checks, and the operator's
``aws ec2 describe-instances`` / ``describe-instance-status`` and the alarms on its metrics
name it by that id. A kitchen host gets the same record: ``up`` registers an instance in the
kitchen cloud's EC2 (moto's ``RunInstances``, about 30 ms) in the region the host's stack
names, and the id moto gives it is the host's instance id everywhere (its NoCloud seed, the
metadata service's ``instance-id``, the role session name); ``destroy`` terminates it, as
EC2 does when the instance goes.

The record is a record only: moto runs nothing, and the host itself is the nspawn container.
Its status checks are moto's (``running``, ``ok``): the kitchen has no hypervisor to fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from kitchen import cloud

# The image the record names. moto does not require it to exist; the host's real image is
# the kitchen's rootfs image (``kitchen.image``), which EC2 has no id for.
IMAGE_ID = "ami-0kitchen0debian12"
INSTANCE_TYPE = "t3.micro"
# The tag that ties a record to its kitchen host (the stack's own tags come on top, from the
# stack's declarations: see choiros_infra/kitchen_aws.py).
HOST_TAG = "kitchen:host"


def register(name: str, region: str, tags: Mapping[str, str] | None = None,
             client: Any = None) -> str:
    """Register kitchen host ``name`` as a running instance in ``region``; return its id."""
    ec2 = client or cloud.aws_client("ec2", region)
    tag_list = [{"Key": k, "Value": v} for k, v in {HOST_TAG: name, **(tags or {})}.items()]
    reply = ec2.run_instances(
        ImageId=IMAGE_ID, InstanceType=INSTANCE_TYPE, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}])
    instance_id: str = reply["Instances"][0]["InstanceId"]
    return instance_id


def terminate(instance_id: str, region: str, client: Any = None) -> None:
    """Terminate the record (nothing when the cloud no longer knows it: a restarted moto)."""
    from botocore.exceptions import ClientError

    ec2 = client or cloud.aws_client("ec2", region)
    with contextlib.suppress(ClientError):
        ec2.terminate_instances(InstanceIds=[instance_id])
