"""The policy pack's entry point: Pulumi runs this file; the policies live in choiros_policies."""

from choiros_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(name="choiros", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
