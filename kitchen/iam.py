"""IAM in the kitchen cloud: who is who when moto enforces policies.

moto runs with ``INITIAL_NO_AUTH_ACTION_COUNT`` set to :data:`BOOTSTRAP_REQUESTS`: it lets
that many requests through unauthenticated, then checks every request's signature and the
caller's identity policies. The bootstrap spends exactly those requests creating the kitchen's
admin (an IAM user whose policy allows everything, like the account's administrator that
``pulumi up`` and an operator's seeding use), then, as the admin, the identity that plays EC2
in the kitchen: it may only call sts:AssumeRole, and an instance role trusts it next to
``ec2.amazonaws.com`` (see :func:`provisioning.iam_policy.trust_policy`). The kitchen's
metadata service uses it to issue a host's role credentials.

A kitchen instance role is created from the same documents ``infra/iam.py`` declares
(:mod:`provisioning.iam_policy`), so the host tools run with exactly the production
permissions and a missing one fails in the kitchen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kitchen.errors import KitchenError
from provisioning.iam_policy import trust_policy_json

ADMIN_USER = "kitchen-admin"
EC2_USER = "kitchen-ec2"
ROLE_POLICY_NAME = "host"
# CreateUser, PutUserPolicy and CreateAccessKey of the admin: the only unauthenticated calls.
BOOTSTRAP_REQUESTS = 3
ALLOW_ALL = {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
ASSUME_ROLES = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}


@dataclass(frozen=True)
class Keys:
    """An IAM user's access key."""

    access_key_id: str
    secret_access_key: str
    arn: str

    def client_kwargs(self) -> dict[str, str]:
        return {"aws_access_key_id": self.access_key_id,
                "aws_secret_access_key": self.secret_access_key}

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


def _user_with_key(iam: Any, user: str, policy: dict[str, Any]) -> Keys:
    arn = iam.create_user(UserName=user)["User"]["Arn"]
    iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"], arn)


def bootstrap(client: Any) -> tuple[Keys, Keys]:
    """Create the admin and EC2 identities in a moto just started; return their keys.

    ``client(service, keys_or_None)`` makes a boto3 client for the kitchen cloud. Raises
    KitchenError when the cloud does not enforce IAM afterwards (a request slipped in and
    took one of the unauthenticated requests, or moto ignored the setting).
    """
    from botocore.exceptions import ClientError

    anonymous = client("iam", None)
    try:
        admin = _user_with_key(anonymous, ADMIN_USER, ALLOW_ALL)
        ec2 = _user_with_key(client("iam", admin), EC2_USER, ASSUME_ROLES)
    except ClientError as exc:
        raise KitchenError(f"the kitchen cloud's IAM bootstrap failed: {exc}",
                           "another client used moto while it started; start the cloud again "
                           "(any kitchen command does)") from exc
    try:
        client("sts", Keys("AKIAKITCHENNOBODY000", "none", "")).get_caller_identity()
    except ClientError:
        return admin, ec2
    raise KitchenError("the kitchen cloud does not enforce IAM (an unknown key was accepted)",
                       "check that moto honours INITIAL_NO_AUTH_ACTION_COUNT (moto.log)")


def put_instance_role(iam: Any, role: str, policy: dict[str, Any], ec2_arn: str) -> str:
    """Create (or update) instance role ``role`` with ``policy`` as its one inline policy,
    trusted by EC2 and by the kitchen's EC2 identity; return its ARN."""
    trust = trust_policy_json([ec2_arn])
    try:
        arn: str = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=trust)
        arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName=ROLE_POLICY_NAME,
                        PolicyDocument=json.dumps(policy, sort_keys=True))
    return arn
