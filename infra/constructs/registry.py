"""The S3 model registry bucket (design.md §3 layout) and the bucket its access logs go to.

Versioned, SSE-S3 encrypted, public access blocked, TLS enforced, access-logged, retained on stack
deletion. Captured requests and feedback labels age out: they move to Infrequent Access after
``capture_ia_days`` and expire after ``capture_expire_days``; noncurrent object versions expire too, so
versioning protects against mistakes without keeping every overwritten object forever. Model artifacts
(``models/``) never expire: a card's lineage must stay resolvable.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

DATA_PREFIXES = ("capture/", "feedback/")


class ModelRegistry(Construct):
    """The registry bucket (``bucket``) and its server-access-logs bucket (``logs_bucket``)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        bucket_name: str | None = None,
        capture_ia_days: int = 30,
        capture_expire_days: int = 365,
        noncurrent_expire_days: int = 90,
        staging_expire_days: int = 7,
    ) -> None:
        super().__init__(scope, id_)
        self.logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            # Server access log delivery only supports SSE-S3 on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=Duration.days(capture_expire_days),
                    noncurrent_version_expiration=Duration.days(30),
                ),
            ],
        )
        data_rules = [
            s3.LifecycleRule(
                id=f"Age{prefix.strip('/').capitalize()}",
                prefix=prefix,
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(capture_ia_days)
                    )
                ],
                expiration=Duration.days(capture_expire_days),
            )
            for prefix in DATA_PREFIXES
        ]
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=bucket_name,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix="registry/",
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                *data_rules,
                # Training runs stage intermediate artifacts; a finished or abandoned run needs none of them.
                s3.LifecycleRule(id="ExpireStaging", prefix="staging/", expiration=Duration.days(staging_expire_days)),
                s3.LifecycleRule(
                    id="ExpireNoncurrent",
                    noncurrent_version_expiration=Duration.days(noncurrent_expire_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
            ],
        )
