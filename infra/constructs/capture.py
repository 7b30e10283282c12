"""Capture delivery: inference log lines → Firehose → ``capture/`` and ``feedback/`` in the registry.

The inference handler writes each sampled request (and each feedback label) as one JSON log line
(``modeldeck.capture``). Each inference log group gets two subscription filters, one per kind (a log
group allows two), both to one Firehose delivery stream. A processor Lambda
(``lambdas.capture.handler``) unpacks CloudWatch's gzip envelopes and sets the partition keys; Firehose's
dynamic partitioning writes to ``{kind}/{model}/dt=YYYY-MM-DD/hour=HH/`` (``modeldeck.capture`` layout).
Undeliverable records land under ``capture/_errors/`` (not a model name, so readers skip it).

The Firehose role may write only ``capture/*`` and ``feedback/*``; the Logs role may only put records on
this stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import pascal
from infra.constructs.functions import FunctionDefaults, python_function, retention

HANDLER = "lambdas.capture.handler.lambda_handler"
KINDS = ("capture", "feedback")
PREFIX = (
    "!{partitionKeyFromLambda:kind}/!{partitionKeyFromLambda:model}/"
    "dt=!{partitionKeyFromLambda:dt}/hour=!{partitionKeyFromLambda:hour}/"
)
ERROR_PREFIX = "capture/_errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/"
# What Firehose hands the processor per invocation: gzip envelopes from CloudWatch Logs. The processor returns
# them decompressed and base64-encoded (x 4/3), and a Lambda response holds at most 6 MB; our capture lines
# compress about 4.4 x (measured on breast-cancer captures), repetitive traffic far more. At the documented
# minimum, 0.2 MB (the default is 1 MB; API reference "ProcessorParameter": 0.2 to 3 MB), a batch fits up to
# a 22 x ratio; at the default it would stop fitting from 4.5 x.
PROCESSOR_BUFFER_MB = "0.2"


def filter_pattern(kind: str) -> logs.IFilterPattern:
    """Matches the JSON log lines of one record kind (``{ $.kind = "capture" }``)."""
    return logs.FilterPattern.string_value("$.kind", "=", kind)


class CaptureDelivery(Construct):
    """The delivery stream, its processor and the subscription filters on the given log groups."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        bucket: s3.IBucket,
        defaults: FunctionDefaults,
        code: lambda_.Code,
        log_groups: Sequence[tuple[str, logs.ILogGroup]],
        stream_name: str,
        buffer_seconds: int = 60,
        buffer_mb: int = 64,
    ) -> None:
        super().__init__(scope, id_)
        processor = python_function(
            self,
            "Processor",
            defaults=defaults,
            handler=HANDLER,
            code=code,
            description="modeldeck capture: unpacks CloudWatch Logs envelopes and sets partition keys",
            memory_mb=256,
            timeout=Duration.minutes(1),
        )
        self.processor = processor.function
        self.processor_role = processor.role

        delivery_logs = logs.LogGroup(
            self, "DeliveryLogs", retention=retention(defaults.log_retention_days), removal_policy=RemovalPolicy.RETAIN
        )
        delivery_log_stream = delivery_logs.add_stream("S3Delivery")

        role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteCaptureAndFeedbackOnly",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects(f"{kind}/*") for kind in KINDS],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FirehoseBucketChecks",
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[bucket.bucket_arn],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeProcessor",
                actions=["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
                # Firehose calls the function qualified ("function:name:version", Firehose developer guide,
                # "Grant Firehose access to AWS Lambda"); an unqualified LambdaArn means $LATEST.
                resources=[self.processor.function_arn, f"{self.processor.function_arn}:$LATEST"],
            )
        )
        delivery_logs.grant_write(role)

        self.stream = firehose.CfnDeliveryStream(
            self,
            "Stream",
            delivery_stream_name=stream_name,
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=firehose.CfnDeliveryStream.DeliveryStreamEncryptionConfigurationInputProperty(
                key_type="AWS_OWNED_CMK"
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=bucket.bucket_arn,
                role_arn=role.role_arn,
                prefix=PREFIX,
                error_output_prefix=ERROR_PREFIX,
                file_extension=".jsonl",
                compression_format="UNCOMPRESSED",
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=buffer_seconds, size_in_m_bs=buffer_mb
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=delivery_logs.log_group_name,
                    log_stream_name=delivery_log_stream.log_stream_name,
                ),
                dynamic_partitioning_configuration=firehose.CfnDeliveryStream.DynamicPartitioningConfigurationProperty(
                    enabled=True,
                    retry_options=firehose.CfnDeliveryStream.RetryOptionsProperty(duration_in_seconds=300),
                ),
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True,
                    processors=[
                        firehose.CfnDeliveryStream.ProcessorProperty(
                            type="Lambda",
                            parameters=[
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="LambdaArn", parameter_value=self.processor.function_arn
                                ),
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="BufferSizeInMBs", parameter_value=PROCESSOR_BUFFER_MB
                                ),
                                firehose.CfnDeliveryStream.ProcessorParameterProperty(
                                    parameter_name="BufferIntervalInSeconds", parameter_value="60"
                                ),
                            ],
                        )
                    ],
                ),
            ),
        )
        # Firehose checks its role when the stream is created; the policy must exist first.
        if role.node.try_find_child("DefaultPolicy") is not None:
            self.stream.node.add_dependency(role.node.find_child("DefaultPolicy"))

        logs_role = iam.Role(
            self,
            "SubscriptionRole",
            assumed_by=iam.ServicePrincipal(
                "logs.amazonaws.com",
                conditions={
                    "StringLike": {
                        "aws:SourceArn": Stack.of(self).format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            ),
        )
        logs_role.add_to_policy(
            iam.PolicyStatement(
                sid="PutCaptureRecords",
                actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
                resources=[self.stream.attr_arn],
            )
        )
        logs_policy = logs_role.node.find_child("DefaultPolicy")
        self.filters: list[logs.CfnSubscriptionFilter] = []
        for model, log_group in log_groups:
            for kind in KINDS:
                sub = logs.CfnSubscriptionFilter(
                    self,
                    f"{pascal(model)}{kind.capitalize()}Filter",
                    log_group_name=log_group.log_group_name,
                    filter_name=f"modeldeck-{kind}",
                    filter_pattern=filter_pattern(kind).log_pattern_string,
                    destination_arn=self.stream.attr_arn,
                    role_arn=logs_role.role_arn,
                )
                # CloudWatch Logs test-delivers when the filter is created, so the role must already work.
                sub.node.add_dependency(logs_policy)
                self.filters.append(sub)
